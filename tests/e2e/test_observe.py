"""`clipline up --observe` end to end, on one stack: a job's trace opened in Phoenix in headless
Chromium (the spans of all five services in the page), a Prometheus graph of a clipline metric,
every metric the rules and dashboards read scraped from the processes, and an alert firing.
Screenshots are kept under test-artifacts/observe/ (printed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import nats
import pytest

from clipline import observe
from clipline.stack import WEBHOOK_PATH, StackOptions, StackState
from tests import promql
from tests.conftest import repo_root
from tests.e2e import chromium
from tests.e2e.harness import clipline, current, running_stack, wait_for

SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
ARTIFACTS = repo_root() / "test-artifacts" / "observe"
TRACE_LINK = re.compile(r"^trace: (http://127\.0\.0\.1:\d+/redirects/traces/([0-9a-f]{32}))$", re.M)
GRAPHED = "clipline_consumer_pending"
"""Read by every service from its start (its durables' backlog): a series exists within one
scrape, whatever jobs ran."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    if observe.phoenix_binary() is None:
        pytest.fail(observe.describe_missing_phoenix(os.environ))
    options = StackOptions(
        generation_seconds=1.5,
        poll_after_ms=200,
        # A job is overdue 1 s past its expected time (not 300 s): the stuck-job alert can fire
        # while the simulator is paused.
        env={"CLIPLINE_SIM_SMALL_ASSETS": "true", "CLIPLINE_POLL_OVERDUE_GRACE_SECONDS": "1"},
        # The poller polls (the overview graphs its polls; with webhooks it would only as a
        # safety net, after the job's end); `job` sends it a webhook of its own.
        webhooks=False,
        observe=True,
    )
    with running_stack(tmp_path_factory.mktemp("observe"), options) as state:
        yield state


@pytest.fixture(scope="module")
def job(stack: StackState) -> tuple[str, str]:
    """One job run with `clipline submit --wait` as a user runs it: (trace link, trace id).
    The tenant has a budget first, so pricing_guard has one to gauge."""
    done = clipline(stack.home, "budget", "set", "--scope", "tenant:default", "--period",
                    "daily", "--limit", "50", "--soft", "40")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    done = clipline(stack.home, "submit", "--wait", "--prompt", "a lighthouse in the fog")
    assert done.returncode == 0, done.stdout + done.stderr
    # A stranger's webhook (unsigned; this stack's simulator sends none): the poller counts it.
    poller = current(stack.home).find("poller")
    stray = httpx.post(f"http://127.0.0.1:{poller.port}{WEBHOOK_PATH}", json={}, timeout=10)
    assert stray.status_code != 200, stray.text  # refused: 503 webhooks_disabled
    found = TRACE_LINK.search(done.stdout)
    assert found, f"no trace link printed:\n{done.stdout}"
    assert found.group(1).startswith(stack.phoenix_url)
    return found.group(1), found.group(2)


def test_status_prints_the_observers_urls_and_every_metrics_url(stack: StackState) -> None:
    done = clipline(stack.home, "status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"prometheus: {stack.prometheus_url}" in done.stdout
    assert f"phoenix (traces): {stack.phoenix_url}" in done.stdout
    for proc in stack.processes:
        if proc.name in ("simulator", *SERVICES):
            assert re.search(rf"^  {proc.name} +{proc.metrics_url}$", done.stdout, re.M), proc.name


def spans_of(phoenix: str, trace_id: str) -> list[dict[str, Any]]:
    """The trace's spans, as Phoenix's REST API has them."""
    response = httpx.get(f"{phoenix}/v1/projects/default/spans", params={"limit": 1000}, timeout=10)
    response.raise_for_status()
    return [s for s in response.json()["data"] if s["context"]["trace_id"] == trace_id]


def service_of(span: dict[str, Any]) -> str | None:
    """The service whose consumer made the span: its durable is `<service>--<...>`."""
    group = (span.get("attributes") or {}).get("messaging.consumer.group.name")
    return str(group).split("--", 1)[0] if group else None


def test_the_jobs_trace_in_phoenix_shows_the_spans_of_all_five_services(
    stack: StackState, job: tuple[str, str]
) -> None:
    link, trace_id = job
    spans: list[dict[str, Any]] = []

    def all_five() -> bool:
        spans[:] = spans_of(stack.phoenix_url, trace_id)
        return {service_of(s) for s in spans} >= set(SERVICES)

    wait_for(all_five, "Phoenix to hold consumer spans of all five services", 30)
    names = Counter(str(s["name"]) for s in spans)

    def every_span_shown(dom: str) -> bool:
        # Each span's row in the trace tree: a name shared by n spans is shown n times.
        return all(dom.count(_html(name)) >= n for name, n in names.items())

    shot = ARTIFACTS / "phoenix-trace.png"

    async def look() -> str:
        async with chromium.browser() as page:
            await page.open(link)
            dom = await page.wait_for(every_span_shown, f"the {len(spans)} spans", 90)
            with contextlib.suppress(TimeoutError):  # a nicer picture: the span's details too
                await page.wait_for(lambda d: ">JSON<" in d, "the selected span's details", 15)
            await page.screenshot(shot)
            return dom

    dom = asyncio.run(look())
    print(f"\nscreenshot: {shot}")
    assert trace_id in dom  # the page is that trace's
    shown = {service_of(s) for s in spans if _html(str(s["name"])) in dom}
    assert shown >= set(SERVICES)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def test_a_prometheus_graph_shows_a_clipline_series(stack: StackState) -> None:
    wait_for(lambda: bool(query(stack.prometheus_url, GRAPHED)), f"a {GRAPHED} series", 30)
    url = f"{stack.prometheus_url}/graph?g0.expr={quote(GRAPHED)}&g0.tab=0&g0.range_input=5m"
    shot = ARTIFACTS / "prometheus-graph.png"

    async def look() -> str:
        async with chromium.browser() as page:
            await page.open(url)
            # The legend names each series with its labels once the graph is drawn.
            dom = await page.wait_for(lambda d: f"{GRAPHED}{{" in d, "the graph's legend", 60)
            await page.screenshot(shot)
            return dom

    dom = asyncio.run(look())
    print(f"\nscreenshot: {shot}")
    assert 'durable="' in dom


def scraped_names(state: StackState) -> set[str]:
    names: set[str] = set()
    for proc in state.processes:
        if proc.metrics_url:
            text = httpx.get(proc.metrics_url, timeout=10).text
            names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                      if line and not line.startswith("#")}  # fmt: skip
    return names


async def poison(state: StackState) -> None:
    """A junk `generated` event (published as the stack's admin): storage gives up on it at
    decode, a dead letter (clipline_messages_rejected_total)."""
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        subject = f"clipline.job.generated.v1.default.job_{uuid.uuid4().hex}"
        await nc.jetstream().publish(subject, b"not an event")
    finally:
        await nc.close()


def test_every_metric_the_rules_and_dashboards_read_is_scraped(
    stack: StackState, job: tuple[str, str]
) -> None:
    """Beside the job run: a dead letter, and a create answered 429 (the simulator's fault
    for a moment), so the series that move only on a bad event are there too; the money and
    S3-error series start at 0. Every name the rules and the dashboards read is scraped."""
    used = promql.clipline_names_used()
    catalogue = promql.catalogue_names()
    assert not [n for n in used if not promql.exposed(n, catalogue)], "not in shared/metrics.py"
    asyncio.run(poison(stack))
    faults = f"{stack.simulator_url}/control/faults"
    storm = {"operations": ["create"], "rate_limit_rate": 1.0, "rate_limit_retry_after_ms": 300}
    assert httpx.put(faults, json=storm, timeout=10).status_code == 200
    scraped: set[str] = set()
    missing: dict[str, list[str]] = {}

    def all_scraped() -> bool:  # gauges read periodically appear within one reading
        scraped.update(scraped_names(stack))
        missing.clear()
        missing.update(
            (name, sorted(where)) for name, where in used.items()
            if not promql.exposed(name, scraped)
        )  # fmt: skip
        return not missing

    try:
        done = clipline(stack.home, "submit", "--prompt", "held back by a 429")
        assert done.returncode == 0, done.stdout + done.stderr
        with contextlib.suppress(AssertionError):
            wait_for(all_scraped, "every metric read to be scraped", 30)
    finally:
        assert httpx.put(faults, json={}, timeout=10).status_code == 200
    assert not missing, f"read by the rules or dashboards, never scraped: {missing}"


def test_alerts_fire_while_the_simulator_is_paused(stack: StackState) -> None:
    """A job is submitted, then the simulator is paused (SIGSTOP: it answers nothing, its scrape
    neither): the poller follows the job past its expected time, so CliplineJobStuck fires, and
    CliplineProcessDown names the simulator. After SIGCONT the job completes."""
    simulator = current(stack.home).find("simulator")
    prometheus = stack.prometheus_url
    done = clipline(stack.home, "submit", "--json", "--prompt", "a stalled provider")
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = json.loads(done.stdout.strip().splitlines()[-1])["job_id"]

    def status() -> str:
        shown = clipline(stack.home, "jobs", "show", job_id, "--json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        return str(json.loads(shown.stdout)["status"])

    wait_for(lambda: status() == "submitted", "the job to be submitted upstream", 60)
    os.kill(simulator.pid, signal.SIGSTOP)
    firing: dict[str, dict[str, Any]] = {}
    try:

        def both_firing() -> bool:
            response = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10)
            for found in response.json()["data"]["alerts"]:
                if found["state"] == "firing":
                    firing[found["labels"]["alertname"]] = found
            return {"CliplineJobStuck", "CliplineProcessDown"} <= set(firing)

        started = time.monotonic()
        # Overdue after the registry's 6.5 s + 1 s of grace, then 15 s of `for`, evaluated
        # every 5 s; a scrape times out after 4 s, then 15 s of `for`.
        wait_for(both_firing, "CliplineJobStuck and CliplineProcessDown to fire", 90)
        print(f"\nfiring after {time.monotonic() - started:.0f}s: {sorted(firing)}")
    finally:
        os.kill(simulator.pid, signal.SIGCONT)
    down = firing["CliplineProcessDown"]
    assert down["labels"]["process"] == "simulator"
    assert "simulator" in down["annotations"]["summary"]
    stuck = firing["CliplineJobStuck"]
    assert stuck["labels"]["provider"] == "simulator"
    assert float(stuck["value"]) >= 1
    wait_for(lambda: status() == "completed", "the job to complete once the simulator runs", 90)


def test_scaling_adds_the_replica_to_prometheus_targets(stack: StackState) -> None:
    done = clipline(stack.home, "scale", "storage", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    try:

        def scraped() -> bool:
            response = httpx.get(f"{stack.prometheus_url}/api/v1/targets", timeout=10)
            active = response.json()["data"]["activeTargets"]
            return any(t["labels"].get("process") == "storage-2" and t["health"] == "up"
                       for t in active)  # fmt: skip

        wait_for(scraped, "Prometheus to scrape storage-2", 30)
    finally:
        done = clipline(stack.home, "scale", "storage", "1")
        assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_restarts_with_the_stacks_targets(stack: StackState) -> None:
    done = clipline(stack.home, "restart", "prometheus")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"prometheus restarted: pid {current(stack.home).find('prometheus').pid}" in done.stdout

    def all_scraped() -> bool:
        response = httpx.get(f"{stack.prometheus_url}/api/v1/targets", timeout=10)
        up = {t["labels"]["process"] for t in response.json()["data"]["activeTargets"]
              if t["health"] == "up"}  # fmt: skip
        return up == {"simulator", *SERVICES}

    wait_for(all_scraped, "Prometheus to scrape every process again", 30)


def test_artifacts_are_ignored_by_git() -> None:
    assert "test-artifacts/" in (repo_root() / ".gitignore").read_text().splitlines()

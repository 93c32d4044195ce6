"""The chaos suite's runner: one embedded stack with replicas, then each scenario in turn, its
jobs submitted over NATS while its faults run, then its evidence gathered and judged.

Each scenario has a tenant of its own, with a lifetime budget that fits all but a tenth of its
jobs (so the budget is hit, and the overshoot check means something). Its jobs are published at
once as another system sends them (bench/pipeline.py), each a 4 s sora-2 video whose upstream
generation takes 1 to 3 s (tests/chaos/faults.py GENERATION). A job with no terminal event in
the CLIPLINE_JOBS stream by the scenario's deadline is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from bench.pipeline import NO_RATE_LIMITS, new_tenant, request
from clipline.stack import StackOptions, admin_endpoint, down, scale, up
from shared.config import nats_servers
from shared.contracts.ids import job_id_for
from shared.contracts.jobs import JobRecordV1, record_key
from shared.registry import load_registry
from shared.streams import JOBS_BUCKET, JOBS_STREAM_NAME
from shared.unavailable import UNAVAILABLE
from tests.chaos import faults
from tests.chaos.verdict import (
    TERMINAL,
    Evidence,
    Verdict,
    Window,
    creates_per_job,
    judge,
    terminal_events,
)
from tests.e2e.harness import current

SCENARIOS = (
    "services-kill",
    "nats-node",
    "s3-outage",
    "upstream-faults",
    "pricing-guard-kill",
    "all-together",
)
REPLICAS = {"pricing_guard": 2, "submitter": 2, "poller": 2, "storage": 2}
MODEL, SIZE, SECONDS = "sora-2", "1280x720", 4  # what bench.pipeline.request asks for


@dataclass(frozen=True)
class Settings:
    jobs: int = 500
    seed: int = 0
    s3_outage: float = 90.0
    nats_cluster: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    kills: int = 6  # per scenario that kills services
    rate: float = 10.0  # job requests published per second: the jobs arrive over a window
    keep: bool = False  # keep the stack's folder (logs) after the run

    @property
    def window(self) -> float:
        """The seconds over which the jobs arrive, and in which the faults strike."""
        return self.jobs / self.rate

    def within(self, scenario: str) -> float:
        """A scenario's deadline, from its first publish: generous, so a slow recovery is
        measured, not cut short."""
        outage = self.s3_outage if scenario in ("s3-outage", "all-together") else 0.0
        return 120.0 + outage + self.window + 0.2 * self.jobs


def stack_options(settings: Settings) -> StackOptions:
    env = {
        **NO_RATE_LIMITS,
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_SIM_FAULTS": json.dumps(faults.calm(settings.seed)),
    }
    options = StackOptions(generation_seconds=2.0, queue_seconds=0.1, poll_after_ms=200, env=env)
    if settings.nats_cluster != 1:
        if not hasattr(options, "nats_cluster"):
            raise SystemExit(
                "this clipline has no NATS cluster mode yet: run with --nats-cluster 1"
            )
        options = replace(options, nats_cluster=settings.nats_cluster)  # type: ignore[call-arg,unused-ignore]
    return options


def servers(url: str) -> list[str]:
    """Every NATS node's URL (a cluster's state lists them comma-separated)."""
    return [u.strip() for u in url.split(",") if u.strip()]


def job_cost() -> int:
    price = load_registry().provider("simulator").price_micros_per_second(MODEL, SIZE)
    assert price is not None, f"{MODEL} at {SIZE} is unpriced"
    return price * SECONDS


@dataclass
class Watch:
    """Every event of one tenant's jobs as it arrives on a core subscription (fast to see; the
    stream, read at the end, is the evidence)."""

    decided: set[str] = field(default_factory=set)
    generated: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    last_end: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        kind, job_id = parts[2], parts[-1]
        if kind in ("admitted", "rejected"):
            self.decided.add(job_id)
        if kind == "generated":
            self.generated.add(job_id)
        if kind in TERMINAL and job_id not in self.ended:
            self.ended.add(job_id)
            self.last_end = time.monotonic()
        self.changed.set()


async def connect(url: str, creds: str) -> Client:
    async def quiet(_: Exception) -> None:
        """A node killed under the connection: it reconnects to another (no traceback)."""

    return await nats.connect(
        nats_servers(url), user_credentials=creds, max_reconnect_attempts=-1,
        reconnect_time_wait=0.5, error_cb=quiet,
    )  # fmt: skip


async def publish(
    js: JetStreamContext, tenant: str, keys: Sequence[str], rate: float, deadline: float
) -> None:
    """Every job request, `rate` a second, each retried until the stream has it (its
    Nats-Msg-Id makes a retry harmless) or `deadline`."""

    async def one(key: str) -> None:
        while True:
            try:
                subject = f"clipline.job.requested.v1.{tenant}"
                headers = {"Nats-Msg-Id": f"{tenant}:{key}"}
                await js.publish(subject, request(key), headers=headers, timeout=10)
                return
            except (nats.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)  # a retry's back-off (a NATS node may be down)

    began, tick = time.monotonic(), 0.2
    sent: list[asyncio.Task[None]] = []
    while len(sent) < len(keys):
        due = min(len(keys), int((time.monotonic() - began + tick) * rate) + 1)
        sent += [asyncio.ensure_future(one(k)) for k in keys[len(sent) : due]]
        if len(sent) < len(keys):
            await asyncio.sleep(tick)  # the arrival schedule, not a wait for an outcome
    await asyncio.gather(*sent)


JS_TIMEOUT = 30.0
"""Seconds a JetStream API request of the suite waits (5 by default): the machine is loaded while
faults strike, and a cluster answers API requests through its meta leader."""


async def stream_events(js: JetStreamContext, tenant: str) -> list[tuple[str, str, str]]:
    """(kind, job id, reason) of every event of `tenant` the CLIPLINE_JOBS stream holds, in
    stream order."""
    deadline = time.monotonic() + 120
    while True:  # a loaded cluster (or one electing) may not answer the consumer's create at once
        try:
            sub = await js.subscribe(
                f"clipline.job.*.v1.{tenant}.*", ordered_consumer=True, stream=JOBS_STREAM_NAME
            )
            break
        except UNAVAILABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)  # a retry's back-off, not a synchronisation
    out: list[tuple[str, str, str]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=15)
            except TimeoutError:
                break  # nothing more delivered (the last message had pending 0 otherwise)
            parts = msg.subject.split(".")
            reason = ""
            if parts[2] in TERMINAL and parts[2] != "completed":
                reason = str(json.loads(msg.data).get("reason") or "")
            out.append((parts[2], parts[-1], reason))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def admin(home: Path, method: str, path: str, deadline: float, **kw: Any) -> Any:
    """A call to the admin API of the first healthy pricing_guard replica, retried (a replica
    may be down) until `deadline`."""
    while True:
        try:
            url, token = await asyncio.to_thread(admin_endpoint, home)
            async with httpx.AsyncClient(timeout=30) as http:
                answer = await http.request(
                    method, url + path, headers={"Authorization": f"Bearer {token}"}, **kw
                )
            answer.raise_for_status()
            return answer.json()
        except (httpx.HTTPError, SystemExit, Exception):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)  # retry back-off


async def poll(check: Callable[[], Awaitable[bool]], deadline: float) -> bool:
    """Poll `check` until it holds (True) or `deadline` (False)."""
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def wait_ended(
    watch: Watch, js: JetStreamContext, tenant: str, jobs: int, deadline: float
) -> None:
    """Until every job has ended (seen on the subscription, or in the stream: a subscription
    misses what is published while its NATS node is down) or `deadline`."""
    checked = time.monotonic()
    while len(watch.ended) < jobs and time.monotonic() < deadline:
        watch.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                watch.changed.wait(), min(5.0, max(0.1, deadline - time.monotonic()))
            )
        if time.monotonic() - checked > 20.0:
            checked = time.monotonic()
            for kind, job_id, _ in await stream_events(js, tenant):
                if kind in TERMINAL and job_id not in watch.ended:
                    watch.ended.add(job_id)
                    watch.last_end = time.monotonic()


async def evidence(home: Path, tenant: str, job_ids: list[str], js: JetStreamContext) -> Evidence:
    """What the scenario left: the stream's terminal events, the simulator's creates, the
    spend ledger once every admitted job has settled, the records' charges, the budget."""
    state = current(home)
    terminal = terminal_events(await stream_events(js, tenant))
    async with httpx.AsyncClient(base_url=state.simulator_url, timeout=60) as http:
        answer = await http.get("/control/creates")
        answer.raise_for_status()
        creates = answer.json()
    mine = set(job_ids)
    ours = [c for c in creates if c["client_request_id"] in mine]
    provider = load_registry().provider("simulator")
    upstream: dict[str, int] = {}
    for c in ours:
        price = provider.price_micros_per_second(c["model"], c["size"])
        job = c["client_request_id"]
        upstream[job] = upstream.get(job, 0) + (price or 0) * int(c["seconds"])
    admitted = sum(1 for ends in terminal.values() if ends and not ends[0].startswith("rejected"))
    spend: dict[str, Any] = {}

    async def settled() -> bool:
        """Every admitted job's reservation charged, released or disputed."""
        nonlocal spend
        spend = await admin(home, "GET", "/v1/admin/spend", time.monotonic() + 60,
                            params={"tenant": tenant})  # fmt: skip
        life = spend["lifetime"]
        return bool(
            life["reserved"]["micros"] == 0 and life["balanced"] and life["jobs"] >= admitted
        )

    await poll(settled, time.monotonic() + 60)
    disputes = await admin(home, "GET", "/v1/admin/disputes", time.monotonic() + 60)
    disputed = [d for d in disputes["disputes"] if d["tenant"] == tenant]
    kv = await js.key_value(JOBS_BUCKET)
    charged: dict[str, int] = {}
    for job_id in job_ids:
        try:
            entry = await kv.get(record_key(tenant, job_id))
        except KeyNotFoundError:
            continue
        if entry.value:
            charged[job_id] = JobRecordV1.model_validate_json(entry.value).charged_micros or 0
    budgets = await admin(home, "GET", "/v1/admin/budgets", time.monotonic() + 60)
    windows = [
        Window(
            f"{b['scope']} {b['period']} {b['window']}", b["used"]["micros"], b["limit"]["micros"]
        )
        for b in budgets["budgets"]
        if b["scope"] == f"tenant:{tenant}"
    ]
    return Evidence(
        job_ids=job_ids,
        terminal=terminal,
        creates=creates_per_job([c["client_request_id"] for c in ours], job_ids),
        upstream=upstream,
        charged=charged,
        ledger_micros=int(spend.get("total", {}).get("micros", 0)),
        windows=windows,
        disputed={d["job_id"]: int(d["estimate"]["micros"]) for d in disputed},
    )


def fault_tasks(
    name: str,
    home: Path,
    settings: Settings,
    rng: random.Random,
    watch: Watch,
    stop: asyncio.Event,
    log: faults.Log,
) -> list[Awaitable[None]]:
    """The faults of scenario `name`."""
    together = name == "all-together"
    out: list[Awaitable[None]] = []
    if name == "services-kill" or together:
        out.append(faults.kill_services(home, rng, stop, settings.kills, settings.window, log))
    if name == "nats-node" or together:
        out.append(faults.kill_nats_node(home, rng, stop, 2, settings.window, log))
    if name == "s3-outage" or together:
        out.append(
            faults.s3_outage(home, settings.s3_outage, lambda: bool(watch.generated), stop, log)
        )
    if name == "upstream-faults" or together:
        out.append(faults.upstream_faults(current(home), settings.seed, rng, stop, log))
    if name == "pricing-guard-kill" or together:
        decided = lambda: len(watch.decided)  # noqa: E731
        out.append(faults.kill_pricing_guard(home, decided, settings.jobs, stop, log))
    return out


async def scenario(home: Path, options: StackOptions, settings: Settings, name: str) -> Verdict:
    rng = random.Random(f"{settings.seed}:{name}")
    state = current(home)
    tenant = new_tenant("cx")
    keys = [f"{tenant}-{n}" for n in range(settings.jobs)]
    job_ids = [job_id_for(tenant, key) for key in keys]
    fits = settings.jobs - max(1, settings.jobs // 10)
    limit = fits * job_cost()
    await admin(home, "PUT", f"/v1/admin/budgets/tenant:{tenant}/lifetime", time.monotonic() + 60,
                json={"limit_micros": limit})  # fmt: skip
    watch = Watch()
    nc = await connect(state.nats_url, state.nats_creds)
    js = nc.jetstream(timeout=JS_TIMEOUT)
    stop = asyncio.Event()
    log = faults.Log()
    errors: list[str] = []
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=watch.on_event)
        await nc.flush()
        tasks = [
            asyncio.ensure_future(t)
            for t in fault_tasks(name, home, settings, rng, watch, stop, log)
        ]
        began = time.monotonic()
        log.began = began
        deadline = began + settings.within(name)
        await publish(js, tenant, keys, settings.rate, deadline)
        await wait_ended(watch, js, tenant, settings.jobs, deadline)
        seconds = (watch.last_end or time.monotonic()) - began
        stop.set()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                first = (str(outcome).strip().splitlines() or [""])[0][:200]
                errors.append(f"fault failed: {type(outcome).__name__}: {first}")
        await asyncio.to_thread(up, home, options)  # anything still down starts again
        found = await evidence(home, tenant, job_ids, js)
    finally:
        stop.set()
        await nc.close()
    verdict = judge(name, found, seconds)
    return replace(verdict, faults=log.lines + errors, errors=errors)


def start_stack(home: Path, settings: Settings) -> StackOptions:
    options = stack_options(settings)
    up(home, options)
    for service, n in REPLICAS.items():
        scale(home, service, n)
    return options


async def run_all(
    home: Path, options: StackOptions, settings: Settings, out: Callable[[str], None]
) -> list[Verdict]:
    verdicts = []
    cluster = any(p.name.startswith("nats-") for p in current(home).processes)
    for name in settings.scenarios:
        if name == "nats-node" and not cluster:
            out(f"{name}: skipped (one nats-server: run with --nats-cluster 3)")
            continue
        out(f"{name}: {settings.jobs} jobs ...")
        verdict = await scenario(home, options, settings, name)
        for line in verdict.faults:
            out(f"  {line}")
        ledger, records, upstream = verdict.money
        problems = f"; PROBLEMS {verdict.problems()}" if not verdict.ok else ""
        out(f"  {verdict.done} done, failed {verdict.failed or '-'}, {verdict.lost} lost in "
            f"{verdict.seconds:.0f}s; spend ledger {ledger}, records {records}, upstream "
            f"{upstream} (micro-dollars){problems}")  # fmt: skip
        verdicts.append(verdict)
    return verdicts


def run(settings: Settings, out: Callable[[str], None] = print) -> list[Verdict]:
    """The whole suite on a fresh stack in a temporary folder, stopped (by PID) at the end."""
    home = Path(tempfile.mkdtemp(prefix="clipline-chaos-"))
    try:
        began = time.monotonic()
        options = start_stack(home, settings)
        out(f"stack up in {time.monotonic() - began:.0f}s under {home}: "
            f"{', '.join(p.name for p in current(home).processes)}")  # fmt: skip
        return asyncio.run(run_all(home, options, settings, out))
    finally:
        survivors = down(home)
        if survivors:
            out(f"WARNING: still running after down: {[(p.name, p.pid) for p in survivors]}")
        if settings.keep or os.environ.get("CHAOS_KEEP"):
            out(f"stack folder kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)

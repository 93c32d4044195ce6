"""Exactly one upstream create per job, under faults and kill -9, proven by the simulator.

Chaos: 200 jobs over NATS while the simulator answers 20% of creates (and listings) with a 5xx,
throws 429 storms, and drops the connection after 30% of the creates it makes. Every job must
end (completed, or failed with a reason), and `/control/creates` must show at most one create
per job id. Crash: creates take 2 s upstream; the submitter is SIGKILLed while they are in
flight, the poller while it polls; after `clipline restart` of each, every job completes with
exactly one create. Both print their counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from clipline.servers import pid_alive
from clipline.stack import StackOptions, StackState
from shared.contracts.ids import job_id_for
from tests.e2e.harness import NO_RATE_LIMITS, current, running_stack

pytestmark = pytest.mark.e2e
TERMINAL = {"completed", "failed", "rejected", "timed_out"}
CHAOS_JOBS = 200
CHAOS_WITHIN = 150.0
CRASH_JOBS = 24
CRASH_WITHIN = 120.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=1.0,
        queue_seconds=0.1,
        poll_after_ms=200,
        # Faults are set per test (PUT /control/faults); rate limits only as injected storms,
        # which the submitters honour (retry-after) though there is no steady limit to shape to.
        env={**NO_RATE_LIMITS, "CLIPLINE_SIM_SMALL_ASSETS": "true"},
    )
    with running_stack(tmp_path_factory.mktemp("exactly-once"), options) as state:
        yield state


def set_faults(state: StackState, **faults: Any) -> None:
    answer = httpx.put(f"{state.simulator_url}/control/faults", json=faults, timeout=10)
    assert answer.status_code == 200, answer.text


@dataclass
class Watch:
    """Every event of one tenant's jobs as it arrives; `ends` maps job id -> (kind, reason)."""

    expected: int
    kinds: Counter[str] = field(default_factory=Counter)
    ends: dict[str, tuple[str, str]] = field(default_factory=dict)
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)
    on_kind: dict[str, Callable[[], None]] = field(default_factory=dict)

    async def on_event(self, msg: Msg) -> None:
        kind, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
        self.kinds[kind] += 1
        hook = self.on_kind.pop(kind, None)
        if hook is not None:
            hook()
        if kind in TERMINAL and job_id not in self.ends:
            body = json.loads(msg.data)
            self.ends[job_id] = (kind, str(body.get("reason") or ""))
            if len(self.ends) == self.expected:
                self.all_ended.set()


async def submit(js: Any, tenant: str, count: int, prompt: str) -> list[str]:
    keys = [f"{tenant}-{i}" for i in range(count)]
    for key in keys:
        body = {
            "model": "sora-2", "size": "1280x720", "seconds": "4", "idempotency_key": key,
            "prompt": f"{prompt}, take {key}",
        }  # fmt: skip
        await js.publish(f"clipline.job.requested.v1.{tenant}", json.dumps(body).encode())
    return [job_id_for(tenant, key) for key in keys]


def creates_per_job(state: StackState, job_ids: list[str]) -> tuple[dict[str, int], list[Any]]:
    creates = httpx.get(f"{state.simulator_url}/control/creates", timeout=30).json()
    mine = [c for c in creates if c["client_request_id"] in set(job_ids)]
    per_job = dict.fromkeys(job_ids, 0)
    for create in mine:
        per_job[create["client_request_id"]] += 1
    return per_job, mine


async def storms(state: StackState, base: dict[str, Any], stop: asyncio.Event) -> int:
    """429 storms: every few seconds most creates are refused for a while. Returns how many."""
    count, storm = 0, {**base, "rate_limit_rate": 0.9}
    while not stop.is_set():
        count += 1
        await asyncio.to_thread(set_faults, state, **storm)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.5)  # a storm's length, cut short at the end
        await asyncio.to_thread(set_faults, state, **base)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 4.0)  # calm between storms
    return count


async def test_chaos_every_job_ends_and_none_is_created_twice(
    stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "seed": 9,
        "operations": ["create", "list"],
        "error_rate": 0.2,
        "error_statuses": [500, 502, 503],
        "rate_limit_rate": 0.02,
        "rate_limit_retry_after_ms": 500,
        "drop_after_create_rate": 0.3,
    }
    set_faults(stack, **base)
    tenant = f"chaos{uuid.uuid4().hex[:8]}"
    watch = Watch(CHAOS_JOBS)
    stop = asyncio.Event()
    started = time.monotonic()
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=watch.on_event)
        storming = asyncio.create_task(storms(stack, base, stop))
        job_ids = await submit(nc.jetstream(), tenant, CHAOS_JOBS, "a kite over a harbour")
        with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
            await asyncio.wait_for(watch.all_ended.wait(), CHAOS_WITHIN)
        stop.set()
        storm_count = await storming
    finally:
        await nc.close()
        set_faults(stack)
    took = time.monotonic() - started
    per_job, creates = creates_per_job(stack, job_ids)
    attempts = httpx.get(f"{stack.simulator_url}/control/attempts", timeout=30).json()
    statuses = Counter(a["status"] for a in attempts if a["client_request_id"] in set(job_ids))
    dropped = {c["client_request_id"] for c in creates if c["dropped"]}
    ends = Counter(kind for kind, _ in watch.ends.values())
    reasons = Counter(reason for kind, reason in watch.ends.values() if kind != "completed")
    adopted = sum(1 for j in dropped if watch.ends.get(j, ("", ""))[0] == "completed")
    with capsys.disabled():
        print(
            f"\n[chaos] {CHAOS_JOBS} jobs in {took:.1f}s, {storm_count} 429 storms:"
            f" {len(creates)} creates for {sum(1 for n in per_job.values() if n)} jobs"
            f" (max {max(per_job.values())} per job), {len(dropped)} dropped after creating,"
            f" {adopted} of those adopted and completed;"
            f" create/list answers by status {dict(sorted(statuses.items()))};"
            f" ended {dict(ends)}, not completed by reason {dict(reasons)}"
        )
    assert len(watch.ends) == CHAOS_JOBS, f"{CHAOS_JOBS - len(watch.ends)} jobs never ended"
    assert set(ends) <= {"completed", "failed"}, ends
    assert all(reason for kind, reason in watch.ends.values() if kind == "failed")
    assert max(per_job.values()) <= 1, {j: n for j, n in per_job.items() if n > 1}
    # Every job that completed has its one create; the faults really happened.
    assert all(per_job[j] == 1 for j, (kind, _) in watch.ends.items() if kind == "completed")
    assert dropped
    assert statuses[429] > 0
    assert any(500 <= s < 600 for s in statuses)


async def restart(home: str, name: str) -> float:
    """`clipline restart`, without blocking the loop that sees events meanwhile; its seconds."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clipline.cli", "--home", home, "restart", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    return time.monotonic() - began


async def gone(pid: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while pid_alive(pid):  # a zombie counts as gone
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        await asyncio.sleep(0.05)  # polling the condition, not a fixed wait


async def event_or_fail(event: asyncio.Event, what: str, within: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), within)
    except TimeoutError:
        pytest.fail(f"no {what} within {within:.0f}s")


def killer(pid: int, fired: asyncio.Event) -> Callable[[], None]:
    def kill() -> None:
        os.kill(pid, signal.SIGKILL)
        fired.set()

    return kill


def log_lines(home: str, name: str, needle: str) -> int:
    path = Path(home) / "logs" / f"{name}.log"
    return sum(needle in line for line in path.read_text().splitlines()) if path.exists() else 0


async def test_kill_9_of_submitter_mid_create_and_poller_mid_poll_one_create_each(
    stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    home = stack.home
    set_faults(stack, operations=["create"], latency_ms=2000)
    tenant = f"crash{uuid.uuid4().hex[:8]}"
    watch = Watch(CRASH_JOBS)
    submitter = current(home).find("submitter").pid
    submitter_killed = asyncio.Event()
    # Creates take 2 s upstream and the submitter runs 16 at once: when the first answer comes
    # back, the others of its batch are still in flight.
    watch.on_kind["submitted"] = killer(submitter, submitter_killed)
    adopted_before = log_lines(home, "submitter", "adopts upstream")
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=watch.on_event)
        job_ids = await submit(nc.jetstream(), tenant, CRASH_JOBS, "a tram in the snow")
        await event_or_fail(submitter_killed, "submitted event to kill the submitter on", 60)
        in_flight = CRASH_JOBS - watch.kinds["submitted"]
        await gone(submitter)
        submitter_restart = await restart(home, "submitter")
        poller = current(home).find("poller").pid
        poller_killed = asyncio.Event()
        # The first job it finds generated: it is following the others then (each one's look
        # is due when it is expected done, so the poller is mid-poll among them).
        watch.on_kind["generated"] = killer(poller, poller_killed)
        await event_or_fail(poller_killed, "generated event to kill the poller on", 60)
        await gone(poller)
        poller_restart = await restart(home, "poller")
        restarted = time.monotonic()
        with contextlib.suppress(TimeoutError):  # the assertions below say what is missing
            await asyncio.wait_for(watch.all_ended.wait(), CRASH_WITHIN)
    finally:
        await nc.close()
        set_faults(stack)
    per_job, creates = creates_per_job(stack, job_ids)
    adopted = log_lines(home, "submitter", "adopts upstream") - adopted_before
    with capsys.disabled():
        print(
            f"\n[crash] {CRASH_JOBS} jobs, create latency 2 s: submitter killed with"
            f" {in_flight} not yet submitted (restart {submitter_restart:.1f}s), poller killed"
            f" mid-poll (restart {poller_restart:.1f}s); {len(creates)} creates, per job"
            f" {dict(Counter(per_job.values()))} (count: jobs), {adopted} adopted after the"
            f" crash; ended {dict(Counter(k for k, _ in watch.ends.values()))}, the last"
            f" {time.monotonic() - restarted:.1f}s after the poller's restart"
        )
    assert in_flight > 0, "every create had been answered before the kill"
    assert sorted(watch.ends) == sorted(job_ids), f"{len(watch.ends)}/{CRASH_JOBS} jobs ended"
    assert {kind for kind, _ in watch.ends.values()} == {"completed"}, watch.ends
    assert set(per_job.values()) == {1}, {j: n for j, n in per_job.items() if n != 1}

"""Recovery: kill -9 each service with 20 jobs in flight, `clipline restart` it, lose nothing.

For each service in turn: submit 20 jobs over NATS, SIGKILL the service as soon as it has
moved the first of them on (so the others are still in front of it or in its hands), restart
it with `clipline restart`, then require every job to complete with exactly one upstream create,
and the first job to move on through the restarted service within MOVE_BOUND seconds of it
being healthy again. Each case prints its measured times.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest

from clipline.servers import pid_alive
from clipline.stack import SERVICES, StackOptions, StackState
from shared.contracts.ids import job_id_for
from tests.e2e.harness import NO_RATE_LIMITS, current, running_stack

pytestmark = pytest.mark.e2e
JOBS = 20
AFTER = 4
"""Jobs submitted once the killed process is gone, before its restart: they can only move on
through the restarted one. The first wave alone may have none left for it: a service faster
than this test's kill (a group commit of all 20 at once) has announced them all before it
dies, and then nothing would show the restart moving anything (seen in CI)."""
MOVE_BOUND = 10.0  # seconds from "healthy again" to the first job it moves on
KILL_WITHIN = 60.0
DONE_WITHIN = 180.0  # generous, so a slow recovery is measured instead of cut short
# The events each service emits: the first of them after its restart is the first move.
EMITS = {
    "intake": {"accepted"},
    "pricing_guard": {"admitted"},
    "submitter": {"submitted"},
    "poller": {"progress", "generated"},
    "storage": {"completed"},
}
# What a job has emitted once it reached each service, and once it is past it: a job between
# the two at the kill was waiting at (or held by) the killed process.
REACHED: dict[str, set[str] | None] = {
    "intake": None,  # every request reaches intake
    "pricing_guard": {"accepted"},
    "submitter": {"admitted"},
    "poller": {"submitted"},
    "storage": {"generated"},
}
PAST = {
    "intake": {"accepted"},
    "pricing_guard": {"admitted"},
    "submitter": {"submitted"},
    "poller": {"generated"},
    "storage": {"completed"},
}
TERMINAL = {"completed", "failed", "rejected", "timed_out"}
# Milestones after each service's own: a job the killed submitter had recorded `submitted` but
# not yet announced may be moved on by its webhook (the poller follows the record) before the
# submitter's redelivery, which then finds it past `submitted` and announces it late (its
# history has it, after `generated`). It moved on first through what the dead process recorded.
LATER = {
    "intake": set(),
    "pricing_guard": set(),
    "submitter": {"progress", "generated", "completed"},
    "poller": {"completed"},
    "storage": set(),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=2.0,
        queue_seconds=0.2,
        poll_after_ms=200,
        # 100 jobs in a few minutes: no rate limit; tiny assets keep renders cheap.
        env={**NO_RATE_LIMITS, "CLIPLINE_SIM_SMALL_ASSETS": "true"},
    )
    with running_stack(tmp_path_factory.mktemp("recovery"), options) as state:
        yield state


@dataclass
class Watch:
    """Every event of one tenant's jobs as it arrives; kills `victim` on the first event of
    `trigger` (inside the callback, so as little as possible happens in between)."""

    victim: int
    trigger: set[str]
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (time, kind, job_id)
    killed_at: float | None = None
    past_victim_at_kill: int = 0
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: dict[str, str] = field(default_factory=dict)
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = JOBS + AFTER

    async def on_event(self, msg: Any) -> None:
        now = time.monotonic()
        kind, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
        self.events.append((now, kind, job_id))
        if kind in self.trigger and self.killed_at is None:
            os.kill(self.victim, signal.SIGKILL)
            self.killed_at = now
            self.past_victim_at_kill = len(self.jobs_past(self.trigger))
            self.killed.set()
        if kind in TERMINAL:
            self.ended[job_id] = kind
            if len(self.ended) == self.expected:
                self.all_ended.set()

    def jobs_past(self, kinds: set[str]) -> set[str]:
        return {job_id for _, kind, job_id in self.events if kind in kinds}

    def left_waiting(self, service: str, job_ids: list[str], until: float) -> set[str]:
        """Jobs the killed `service` held or that reached it while it was down (before `until`,
        when it was healthy again), and were not past it when it was killed."""
        assert self.killed_at is not None
        reached_kinds = REACHED[service]
        reached = (
            set(job_ids)
            if reached_kinds is None
            else {j for at, kind, j in self.events if at <= until and kind in reached_kinds}
        )
        past = {j for at, kind, j in self.events if at <= self.killed_at and kind in PAST[service]}
        return reached - past

    def next_move(
        self, job_id: str, after: float, also: frozenset[str] | set[str] = frozenset()
    ) -> float | None:
        kinds = self.trigger | also
        moves = [at for at, kind, j in self.events if j == job_id and kind in kinds]
        return min((at for at in moves if at > after), default=None)

    def first_move_after(self, moment: float) -> float | None:
        after = [at for at, kind, _ in self.events if kind in self.trigger and at > moment]
        return min(after, default=None)


async def submit(js: Any, tenant: str, jobs: int = JOBS, wave: str = "recovery") -> list[str]:
    keys = [f"{wave}-{i}" for i in range(jobs)]
    for key in keys:
        body = {
            "model": "sora-2", "size": "1280x720", "seconds": "4", "idempotency_key": key,
            "prompt": f"a lighthouse keeper counting ships, take {key}",
        }  # fmt: skip
        await js.publish(f"clipline.job.requested.v1.{tenant}", json.dumps(body).encode())
    return [job_id_for(tenant, key) for key in keys]


async def restart(home: str, name: str) -> None:
    """`clipline restart`, run without blocking the loop that timestamps events meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clipline.cli", "--home", home, "restart", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()


@pytest.mark.parametrize("service", SERVICES)
async def test_kill_9_and_restart_loses_nothing(
    stack: StackState, service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    home = stack.home
    victim = current(home).find(service).pid
    watch = Watch(victim, EMITS[service])
    tenant = f"rec{service.replace('_', '')}{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=watch.on_event)
        job_ids = await submit(nc.jetstream(), tenant)
        await asyncio.wait_for(watch.killed.wait(), KILL_WITHIN)
        assert watch.past_victim_at_kill < JOBS, f"all jobs were past {service} at the kill"
        gone_by = time.monotonic() + KILL_WITHIN
        while pid_alive(victim):  # a zombie counts as gone
            assert time.monotonic() < gone_by, f"{service} survived SIGKILL"
            await asyncio.sleep(0.05)  # polling the condition, not a fixed wait
        job_ids += await submit(nc.jetstream(), tenant, AFTER, "after-kill")
        started = time.monotonic()
        await restart(home, service)
        healthy = time.monotonic()
        with contextlib.suppress(TimeoutError):  # the assertions below report it, with timings
            await asyncio.wait_for(watch.all_ended.wait(), DONE_WITHIN)
    finally:
        await nc.close()
    assert current(home).find(service).pid != victim
    # Counted from the start of the restart (the old process was gone by then); a move before
    # `clipline restart` reported healthy comes out negative.
    first_move = watch.first_move_after(started)
    move = None if first_move is None else first_move - healthy
    last_end = max((at for at, kind, _ in watch.events if kind in TERMINAL), default=healthy)
    with capsys.disabled():
        print(
            f"\n[recovery] {service}: killed with {watch.past_victim_at_kill}/{JOBS} jobs past it;"
            f" restart took {healthy - started:.1f}s;"
            f" first move {'never' if move is None else f'{move:.1f}s'} after healthy;"
            f" {sum(k == 'completed' for k in watch.ended.values())}/{len(job_ids)} completed,"
            f" the last {last_end - healthy:.1f}s after healthy"
        )
    assert sorted(watch.ended) == sorted(job_ids), f"{len(watch.ended)}/{len(job_ids)} jobs ended"
    assert set(watch.ended.values()) == {"completed"}, watch.ended
    creates = httpx.get(f"{stack.simulator_url}/control/creates", timeout=10).json()
    per_job = dict.fromkeys(job_ids, 0)
    for create in creates:
        if create["client_request_id"] in per_job:
            per_job[create["client_request_id"]] += 1
    assert set(per_job.values()) == {1}, {j: n for j, n in per_job.items() if n != 1}
    assert move is not None, f"no job moved on through {service} after its restart"
    assert move <= MOVE_BOUND, f"{service}: first move {move:.1f}s after it was healthy again"
    # The jobs the dead process held (or that waited in front of it) continue within the bound
    # too: a held message is redelivered once its short ack_wait runs out, not a minute later.
    assert watch.killed_at is not None
    waiting = watch.left_waiting(service, job_ids, healthy)
    if service == "intake":  # every request is in front of intake at the kill
        assert len(waiting) == JOBS + AFTER - watch.past_victim_at_kill
    late: dict[str, float] = {}
    for job_id in waiting:
        moved = watch.next_move(job_id, watch.killed_at, also=LATER[service])
        assert moved is not None, f"{job_id} never moved on through {service}"
        late[job_id] = moved - started  # from the moment `clipline restart` began
    with capsys.disabled():
        print(
            f"[recovery] {service}: {len(waiting)} jobs were held by it or reached it while it"
            f" was down; the last of them moved on {max(late.values(), default=0.0):.1f}s after"
            f" the restart began ({max(late.values(), default=0.0) - (healthy - started):.1f}s"
            " after healthy)"
        )
    assert max(late.values(), default=0.0) <= MOVE_BOUND, late

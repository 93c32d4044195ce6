"""P5, many jobs in flight: the memory (RSS) of the five services and their CPU while 10,000
jobs generate upstream for 10 minutes, with webhooks on.

Run: python -m bench.inflight [jobs] [generation_seconds]
     (or BENCH_INFLIGHT_JOBS, BENCH_INFLIGHT_GENERATION_SECONDS; make bench runs it; default
     10,000 jobs of 600 s, a 60 s window (BENCH_INFLIGHT_WINDOW_SECONDS) after 15 s of settling
     (BENCH_INFLIGHT_SETTLE_SECONDS): about 5 minutes; 1000 jobs is a quick try)

All jobs are published at once over NATS (`PUBLISH_BATCH` publishes in flight) on a fresh
embedded stack with webhooks on, no rate limits and no poll hint. Once every job is created
upstream (the simulator's /control/videos lists them all) and the settling time has passed, the
window starts: each service's CPU (utime + stime from /proc/<pid>/stat) over the window, and its
RSS (VmRSS) and PSS (smaps_rollup) at the end; PIDs from the stack's record. Also printed: how
long submission took, the upstream GETs in the window, and the poller's durable consumer at the
start and end of the window (JetStream's max_ack_pending bounds how many delayed redeliveries,
the poller's timers, one consumer can hold). The baseline: the same figures for the same stack
idle for BENCH_INFLIGHT_IDLE_SECONDS (20) before submission. The stack is then stopped without
waiting for the jobs.
Goals (issue 9): total RSS <= 600 MB, CPU while waiting <= 5% of one core. A missed goal prints
FAIL; the run still finishes (exit status 0).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from bench.harness import cpu_seconds
from bench.pipeline import (
    FOLLOW_ENV,
    Events,
    control,
    env_number,
    new_tenant,
    registry_for,
    service_pids,
    stack,
    submit,
    verdict,
)
from clipline.stack import StackOptions, StackState
from shared.contracts import JobSubmittedV1
from shared.streams import JOBS_STREAM_NAME

RSS_GOAL_MB = 600.0
CPU_GOAL_SHARE = 0.05  # of one core
MB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    name: str
    cpu_seconds: float
    rss_bytes: int
    pss_bytes: int


def status_kb(path: str, field: str) -> int:
    """A `Field:   1234 kB` line of /proc/<pid>/status or smaps_rollup, in bytes (0 if absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def sample(pids: dict[str, int]) -> dict[str, Usage]:
    return {
        name: Usage(
            name,
            cpu_seconds(pid),
            status_kb(f"/proc/{pid}/status", "VmRSS"),
            status_kb(f"/proc/{pid}/smaps_rollup", "Pss"),
        )
        for name, pid in pids.items()
    }


async def consumer(js: JetStreamContext) -> str:
    durable = JobSubmittedV1.durable("poller")
    info = await js.consumer_info(JOBS_STREAM_NAME, durable)
    return (
        f"num_ack_pending {info.num_ack_pending}, num_pending {info.num_pending}, "
        f"num_redelivered {info.num_redelivered}, max_ack_pending {info.config.max_ack_pending}"
    )


@dataclass(frozen=True)
class Window:
    """Each process's CPU over a stretch of time, and its memory at the end of it."""

    seconds: float
    cpu: dict[str, float]
    end: dict[str, Usage]

    def share(self, name: str) -> float:
        return self.cpu[name] / self.seconds


async def observe(pids: dict[str, int], seconds: float) -> Window:
    before, started = sample(pids), time.monotonic()
    await asyncio.sleep(seconds)
    after, elapsed = sample(pids), time.monotonic() - started
    return Window(elapsed, {n: after[n].cpu_seconds - before[n].cpu_seconds for n in pids}, after)


async def submit_all(state: StackState, nc: Client, events: Events, jobs: int) -> None:
    """Publish every request at once; return once each job is created upstream (or ended)."""
    tenant = new_tenant("inflight")
    await events.watch(nc, tenant)
    js = nc.jetstream()
    first_publish = time.time()
    await submit(js, tenant, [f"{tenant}-{n}" for n in range(jobs)])
    print(f"  {jobs} requests published in {time.time() - first_publish:.2f} s; waiting until "
          "all are created upstream ...", flush=True)  # fmt: skip
    deadline = time.monotonic() + jobs / 20 + 180
    await events.until(lambda: events.kinds["submitted"] + len(events.ended) >= jobs, deadline)
    videos = await control(state, "videos")
    took = max((v["created_at"] for v in videos), default=first_publish) - first_publish
    print(f"  submission: {len(videos)} of {jobs} jobs created upstream, the last {took:.1f} s "
          f"after the first publish ({len(videos) / max(took, 1e-9):.0f} jobs/s); ended "
          f"otherwise: {len(events.ended)} {list(events.ended.values())[:3]}",
          flush=True)  # fmt: skip


async def measure(state: StackState, jobs: int, idle: float, settle: float, window: float) -> None:
    pids = service_pids(state)
    others = {p.name: p.pid for p in state.processes if p.name in ("nats", "simulator")}
    print(f"  baseline: the idle stack for {idle:g} s ...", flush=True)
    baseline = await observe(pids | others, idle)
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    events = Events()
    try:
        await submit_all(state, nc, events, jobs)
        js = nc.jetstream()
        await asyncio.sleep(settle)  # the submission's tail (the first look at each job) ends
        print(f"  window of {window:g} s starts; poller consumer: {await consumer(js)}", flush=True)
        gets_before = sum(v["retrieves"] for v in await control(state, "videos"))
        waiting = await observe(pids | others, window)
        print(f"  window ends; poller consumer: {await consumer(js)}")
        gets = sum(v["retrieves"] for v in await control(state, "videos")) - gets_before
        print(f"  upstream GETs in the window: {gets}; events so far: {dict(events.kinds)}")
    finally:
        await nc.close()
    report(jobs, list(pids), baseline, waiting)


def report(jobs: int, services: list[str], idle: Window, waiting: Window) -> None:
    print(f"\nP5 {jobs} jobs in flight, webhooks on: the five services while waiting "
          f"({waiting.seconds:.0f} s), next to the same stack idle before submission "
          f"({idle.seconds:.0f} s)")  # fmt: skip
    print(f"  {'process':<14} {'RSS MB':>8} {'idle':>7} {'PSS MB':>8} {'CPU s':>7} "
          f"{'% of a core':>12} {'idle':>6}")  # fmt: skip

    def line(name: str, members: list[str]) -> None:
        rss = sum(waiting.end[n].rss_bytes for n in members) / MB
        pss = sum(waiting.end[n].pss_bytes for n in members) / MB
        idle_rss = sum(idle.end[n].rss_bytes for n in members) / MB
        cpu = sum(waiting.cpu[n] for n in members)
        idle_share = sum(idle.share(n) for n in members)
        print(f"  {name:<14} {rss:>8.1f} {idle_rss:>7.1f} {pss:>8.1f} {cpu:>7.2f} "
              f"{cpu / waiting.seconds:>11.1%} {idle_share:>6.1%}")  # fmt: skip

    for name in services:
        line(name, [name])
    line("five services", services)
    for name in sorted(waiting.end.keys() - set(services)):
        line(f"({name})", [name])
    rss_mb = sum(waiting.end[n].rss_bytes for n in services) / MB
    share = sum(waiting.share(n) for n in services)
    print(f"  total RSS of the five services {rss_mb:.0f} MB (goal <= {RSS_GOAL_MB:.0f} MB): "
          f"{verdict(rss_mb <= RSS_GOAL_MB)}; their CPU while waiting {share:.1%} of one core "
          f"(goal <= {CPU_GOAL_SHARE:.0%}): {verdict(share <= CPU_GOAL_SHARE)}")  # fmt: skip


def main(jobs: int, generation: float, idle: float, settle: float, window: float) -> None:
    print(f"P5: {jobs} jobs in flight, generation {generation:g} s, webhooks on; starting a stack")
    with tempfile.TemporaryDirectory(prefix="clipline-bench-registry-") as folder:
        # The deployment states its provider's speed in the registry, so the poller's safety
        # polls wait until the jobs are due (it would learn it too, but only from finished jobs).
        registry = registry_for(Path(folder), generation)
        env = {**FOLLOW_ENV, "CLIPLINE_REGISTRY_PATH": str(registry)}
        options = StackOptions(
            generation_seconds=generation, queue_seconds=0.0, webhooks=True, env=env
        )
        with stack("inflight", options) as state:
            asyncio.run(measure(state, jobs, idle, settle, window))


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else int(env_number("BENCH_INFLIGHT_JOBS", 10_000)),
        float(sys.argv[2])
        if len(sys.argv) > 2
        else env_number("BENCH_INFLIGHT_GENERATION_SECONDS", 600.0),
        env_number("BENCH_INFLIGHT_IDLE_SECONDS", 20.0),
        env_number("BENCH_INFLIGHT_SETTLE_SECONDS", 15.0),
        env_number("BENCH_INFLIGHT_WINDOW_SECONDS", 60.0),
    )

"""End to end: clipline against the script a user would write (bench/naive.py: asyncio, the
openai SDK and minio), on one embedded stack, same simulator, same S3, same run.

Run: python -m bench.e2e [jobs] [--quick]   (or BENCH_E2E_JOBS, default 1000; about 5 minutes;
     make bench runs it. --quick: 100 jobs, a short sweep, for trying it)

One fresh stack (bench/pipeline.py) with the simulator in zero-latency mode (no queue, generation
BENCH_E2E_GENERATION_SECONDS, default 0; small assets; no rate-limit tier, no poll hint, so the
SDK polls at its own 1000 ms), clipline's rate limits lifted (CLIPLINE_RATE_RPM=100000,
CLIPLINE_RATE_CONCURRENCY=1000) and webhooks on (the stack's default; the simulator also sends
them for the script's videos, which the poller drops as unknown). In order:
1. a few warm-up jobs each way (not counted);
2. the script: `jobs` videos started at once (asyncio.gather), against the idle stack;
3. clipline: `jobs` requests published at once over NATS until every job is terminal; each must
   be `completed` (the run fails otherwise). Latency is request to `completed` event;
4. a sample of BENCH_E2E_TAP_JOBS (200) more clipline jobs under a `>` subscription
   (bench/nats_traffic.py), for where a job's messages go;
5. the offered-load sweep: BENCH_E2E_RATES jobs/s (10,20,40,80), BENCH_E2E_SWEEP_SECONDS (8)
   each, the script then clipline; throughput achieved and p99 latency against offered load,
   plotted to docs/performance-load.svg (BENCH_E2E_PLOT; empty: no plot).
CPU: utime + stime of every process of the stack (/proc/<pid>/stat) and of this process (the
script's, in phase 2) over each phase, per job. Messages: nats-server's /varz counters over
phase 3 (the events this bench subscribes to add about one out message per event). A clipline
phase ends only when every durable consumer of the jobs stream has no message pending its ack
(/jsz; at most DRAIN_SECONDS, printed if hit) and the server is then quiet: work a job leaves
behind it, such as a poll held in a delayed nak past the job's completion, is counted.
Goals: jobs/s at least 1.0x the script's (beyond: 2x), the five services' CPU at most 15 ms per
job, at most 40 messages in per job. A missed goal prints FAIL (exit status 0); a lost or failed
job, on either side, fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.e2e_report import (
    Phase,
    Step,
    plot,
    report_breakdown,
    report_burst,
    report_idle,
    report_sweep,
)
from bench.e2e_stats import Latency, Usage, completion_rate, per_job, varz_delta
from bench.harness import ROOT, context_switches, cpu_split
from bench.naive import Script
from bench.nats_traffic import Wiretap, drained, monitor_url, settle, varz
from bench.pipeline import NO_RATE_LIMITS, TERMINAL, env_number, new_tenant, request, stack
from clipline.replicas import SERVICES
from clipline.stack import StackOptions, StackState
from shared.contracts.ids import job_id_for
from shared.streams import JOBS_STREAM_NAME

DEFAULT_JOBS = 1000
WARM_UP = 5
DEADLINE_SECONDS = 120.0  # for a phase's jobs to end, plus half a second a job
DRAIN_SECONDS = 120.0
"""After a phase's jobs ended, how long its durable timers (delayed naks) may take to come due."""
IDLE_SECONDS = 2.0
STAGES = ("accepted", "admitted", "submitted", "generated", "completed")


@dataclass(frozen=True)
class Config:
    jobs: int
    tap_jobs: int
    rates: tuple[float, ...]
    sweep_seconds: float
    generation_seconds: float
    plot: str

    @classmethod
    def from_args(cls, argv: Sequence[str]) -> Config:
        quick = "--quick" in argv
        numbers = [a for a in argv if not a.startswith("--")]
        jobs = int(numbers[0]) if numbers else int(env_number("BENCH_E2E_JOBS", DEFAULT_JOBS))
        rates = os.environ.get("BENCH_E2E_RATES", "10,20" if quick else "10,20,40,80")
        return cls(
            jobs=100 if quick and not numbers else jobs,
            tap_jobs=int(env_number("BENCH_E2E_TAP_JOBS", 50 if quick else 200)),
            rates=tuple(float(r) for r in rates.split(",") if r.strip()),
            sweep_seconds=env_number("BENCH_E2E_SWEEP_SECONDS", 4 if quick else 8),
            generation_seconds=env_number("BENCH_E2E_GENERATION_SECONDS", 0.0),
            plot=os.environ.get("BENCH_E2E_PLOT", str(ROOT / "docs" / "performance-load.svg")),
        )


async def paced(
    offsets: Sequence[float], launch: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start job i at `offsets[i]` seconds from now (all at once when every offset is 0); wait
    for all of them. The start, monotonic."""
    start = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for index, offset in enumerate(offsets):
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
        tasks.append(asyncio.create_task(launch(index)))
    await asyncio.gather(*tasks)
    return start


@dataclass
class Tracker:
    """One tenant's jobs: when each stage's event first arrived, and how each job ended."""

    jobs: int
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    ended: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        now = time.monotonic()
        parts = msg.subject.split(".")
        kind, job_id = parts[2], parts[-1]
        stages = self.seen.setdefault(job_id, {})
        if kind in stages:
            return
        if kind in TERMINAL and not TERMINAL & stages.keys():
            self.ended += 1
            if kind != "completed":
                self.failed[job_id] = f"{kind}: {msg.data[:300]!r}"
        stages[kind] = now
        if self.ended >= self.jobs:
            self.done.set()


def stage_latencies(
    start: float, offsets: Sequence[float], seen: list[dict[str, float]]
) -> dict[str, Latency]:
    """Request to `accepted`, then between each stage's event and the next, as they arrived."""
    first = [stages["accepted"] - (start + o) for stages, o in zip(seen, offsets, strict=True)]
    out = {"request -> accepted": Latency.of(first)}
    for a, b in itertools.pairwise(STAGES):
        gaps = [stages[b] - stages[a] for stages in seen if a in stages and b in stages]
        if gaps:
            out[f"{a} -> {b}"] = Latency.of(gaps)
    return out


@dataclass(frozen=True)
class Bench:
    """The stack under test, a NATS connection to it (the admin identity) and the script."""

    state: StackState
    nc: Client
    script: Script
    monitor: str

    def cpu(self) -> dict[str, Usage]:
        """CPU so far of every process of the stack, and of this one ("bench")."""
        pids = {p.name: p.pid for p in self.state.processes} | {"bench": os.getpid()}
        return {name: Usage(*cpu_split(pid), context_switches(pid)) for name, pid in pids.items()}

    async def clipline(self, name: str, offsets: Sequence[float]) -> Phase:
        """Job requests over NATS at `offsets` until every job is terminal and the stack has
        settled (what a job leaves behind, such as its budget settlement, is done). A job that
        did not complete fails the run."""
        js = self.nc.jetstream()
        tenant = new_tenant(name)
        keys = [f"{name}-{i}" for i in range(len(offsets))]
        tracker = Tracker(len(keys))
        sub = await self.nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=tracker.on_event)

        async def publish(index: int) -> None:
            subject = f"clipline.job.requested.v1.{tenant}"
            headers = {"Nats-Msg-Id": f"{tenant}:{keys[index]}"}
            await js.publish(subject, request(keys[index]), headers=headers)

        start = await paced(offsets, publish)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tracker.done.wait(), DEADLINE_SECONDS + len(keys) / 2)
        await sub.unsubscribe()
        ids = [job_id_for(tenant, key) for key in keys]
        seen = [tracker.seen.get(i, {}) for i in ids]
        completed = sum(1 for stages in seen if "completed" in stages)
        if completed != len(ids):
            failed = dict(list(tracker.failed.items())[:5])
            raise SystemExit(f"clipline {name}: {completed}/{len(ids)} jobs completed; {failed}")
        # What a job leaves behind counts: a message held in a delayed nak (a followed job's
        # next poll, past its completion) is redelivered, read and acked later, so the phase
        # ends only once no consumer of the jobs stream has one pending, then quiet.
        held = await drained(self.monitor, JOBS_STREAM_NAME, DRAIN_SECONDS)
        if held is not None:
            print(f"  WARNING: clipline {name}: after {DRAIN_SECONDS:g} s messages still pending "
                  f"their ack: {held}", flush=True)  # fmt: skip
        settled = await settle(self.monitor)
        done = [stages["completed"] for stages in seen]
        latencies = [t - (start + o) for t, o in zip(done, offsets, strict=True)]
        phase = Phase("clipline", len(ids), start, done, latencies)
        phase.stages = stage_latencies(start, offsets, seen)
        phase.settled = settled
        return phase

    async def the_script(self, name: str, offsets: Sequence[float]) -> Phase:
        """The script's jobs at `offsets`; one that did not complete fails the run."""
        keys = [f"{name}-{i}" for i in range(len(offsets))]
        start = await paced(offsets, lambda index: self.script.one(keys[index]))
        finished = self.script.finished
        missing = [k for k in keys if k not in finished.completed_at]
        if missing:
            failed = {k: finished.failed.get(k, "never ended") for k in missing[:5]}
            raise SystemExit(f"the script {name}: {len(missing)}/{len(keys)} jobs failed; {failed}")
        done = [finished.completed_at[k] for k in keys]
        latencies = [t - (start + o) for t, o in zip(done, offsets, strict=True)]
        return Phase("the script", len(keys), start, done, latencies)


async def burst(bench: Bench, config: Config) -> None:
    """Phases 1 to 3: warm-up, the script, clipline; their report."""
    # clipline first: storage makes the bucket the script uploads to.
    await bench.clipline("warm", [0.0] * WARM_UP)
    await bench.the_script("warm", [0.0] * WARM_UP)
    if await settle(bench.monitor) is None:
        print("  WARNING: the stack did not settle after the warm-up")
    at_once = [0.0] * config.jobs
    cpu = bench.cpu()
    naive = await bench.the_script("script", at_once)
    naive.cpu = {k: v - cpu[k] for k, v in bench.cpu().items()}
    await settle(bench.monitor)  # the poller's share of the script's webhooks
    before, cpu, cpu_at = await varz(bench.monitor), bench.cpu(), time.monotonic()
    ours = await bench.clipline("burst", at_once)
    after, cpu_after = await varz(bench.monitor), bench.cpu()
    ours.cpu = {k: v - cpu[k] for k, v in cpu_after.items()}
    ours.cpu_wall = time.monotonic() - cpu_at
    ours.varz = per_job(varz_delta(before, after), config.jobs)
    report_burst(naive, ours, services=SERVICES)


async def tapped(bench: Bench, jobs: int) -> None:
    """Phase 4: `jobs` clipline jobs under a `>` subscription; messages per job by class."""
    tap = Wiretap()
    await tap.open(bench.state)
    try:
        idle_start = time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)  # a fixed window of the idle stack's own traffic
        idle_seconds = time.monotonic() - idle_start
        idle = Counter(tap.counts)
        tap.reset()
        phase = await bench.clipline("tap", [0.0] * jobs)
        await tap.flush()
        seconds = time.monotonic() - phase.start
        report_breakdown(tap.counts, jobs, seconds, phase.settled is not None, tap.errors)
        report_idle(idle, idle_seconds)
    finally:
        await tap.close()


async def sweep(bench: Bench, config: Config) -> list[Step]:
    """Phase 5: each offered rate for `sweep_seconds`, the script then clipline."""
    steps = []
    for rate in config.rates:
        count = max(2, round(rate * config.sweep_seconds))
        offsets = [i / rate for i in range(count)]
        label = f"r{rate:g}".replace(".", "_")
        theirs = await bench.the_script(f"script-{label}", offsets)
        await settle(bench.monitor)
        ours = await bench.clipline(label, offsets)
        steps.append(Step(rate, count, theirs, ours))
        print(f"  offered {rate:5g} jobs/s x {count:4d}: "
              f"clipline {completion_rate(ours.done):6.1f} jobs/s p99 {ours.latency.p99:6.2f} s; "
              f"script {completion_rate(theirs.done):6.1f} jobs/s p99 {theirs.latency.p99:6.2f} s",
              flush=True)  # fmt: skip
    return steps


async def run(state: StackState, config: Config) -> None:
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    bench = Bench(state, nc, Script(state), monitor_url(state))
    try:
        await burst(bench, config)
        if config.tap_jobs:
            await tapped(bench, config.tap_jobs)
        if config.rates:
            print(f"\nOffered-load sweep ({config.sweep_seconds:g} s per rate):", flush=True)
            steps = await sweep(bench, config)
            report_sweep(steps)
            if config.plot:
                plot(steps, Path(config.plot))
                print(f"  plot written: {config.plot}")
    finally:
        await bench.script.close()
        await nc.close()


def main(argv: Sequence[str]) -> None:
    config = Config.from_args(argv)
    print(f"End to end: {config.jobs} jobs at once, clipline against the script a user would "
          f"write (openai SDK + minio), one stack, generation {config.generation_seconds:g} s, "
          "small assets, rate limits lifted, webhooks on", flush=True)  # fmt: skip
    env = {
        **NO_RATE_LIMITS,
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_SIM_POLL_AFTER_MS": "off",
    }
    options = StackOptions(generation_seconds=config.generation_seconds, queue_seconds=0.0, env=env)
    started = time.monotonic()
    with stack("e2e", options) as state:
        asyncio.run(run(state, config))
    print(f"  (whole bench {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])

"""P4, following jobs: upstream GETs per job and notification lag (upstream completion -> the
job's `generated` event), polling only and with webhooks, each on a fresh embedded stack.

Run: python -m bench.follow_up [jobs] [generation_seconds]
     (or BENCH_FOLLOW_JOBS, BENCH_GENERATION_SECONDS; make bench runs it; default 120 jobs of a
     fixed 20 s, submitted evenly over BENCH_FOLLOW_SPREAD_SECONDS, default twice the
     generation time: about 4 minutes for both modes)

Every job takes exactly the generation time upstream (no queue), so the fewest GETs that can
follow a job is one: a single retrieve right at completion. That is the baseline each mode's
GETs per job is divided by. Jobs are submitted at a steady rate, not all at once, so a poller
that learns generation times from finished jobs can use what it learned for the later ones, as
in a steady stream of work. The upstream sends no openai-poll-after-ms hint (bench/pipeline.py),
so the poller's own schedule is what is measured; the rate limits are off (that is P3).

From the simulator's /control/videos: each video's completion time (wall clock, float) and how
many retrieves named it. From NATS: when each job's `generated` event arrived here. Lag is the
difference; GETs per job the retrieves over all the jobs divided by their number.

Before the measured jobs, WARMUP jobs of the same kind run to their end on the same stack (a
steady stream of work, where the poller already knows how long such a job takes: it learns it
from MIN_SAMPLES finished ones); their GETs are printed apart as the cold start, not counted.
Goals (issue 9): webhooks <= 1.1 GETs per job and lag p50 <= 1 s; polling only <= 1.5x the
fewest GETs. A missed goal prints FAIL; the run still finishes (exit status 0).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import Any

import nats

from bench.pipeline import FOLLOW_ENV, Events, control, env_number, new_tenant, stack, submit
from bench.pipeline import verdict as pass_fail
from clipline.stack import StackOptions, StackState
from services.poller.schedule import MIN_SAMPLES

FEWEST_GETS_PER_JOB = 1.0  # one retrieve right at the known completion time
WEBHOOK_GETS_GOAL = 1.1
WEBHOOK_LAG_P50_GOAL = 1.0
POLLING_RATIO_GOAL = 1.5
SETTLE_SECONDS = 3.0  # after the last `generated`: a straggling poll still counts against a mode
WARMUP = MIN_SAMPLES + 1


@dataclass(frozen=True)
class Mode:
    name: str
    jobs: int
    generated: int
    gets: int
    most_gets: int
    lags: list[float]
    ended: dict[str, str]
    warmup_gets: int = 0
    warmup_jobs: int = 0

    @property
    def gets_per_job(self) -> float:
        return self.gets / self.jobs if self.jobs else 0.0

    def lag(self, q: float) -> float:
        if not self.lags:
            return float("nan")
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(webhooks: bool, jobs: int, generation: float, spread: float) -> Mode:
    options = StackOptions(
        generation_seconds=generation, queue_seconds=0.0, webhooks=webhooks, env=FOLLOW_ENV
    )
    name = "webhooks" if webhooks else "polling"
    print(f"  {name}: starting a stack ...", flush=True)
    with stack(f"follow-{name}", options) as state:
        return asyncio.run(follow(state, name, jobs, generation, spread))


async def warm_up(state: StackState, name: str, generation: float) -> list[dict[str, Any]]:
    """WARMUP jobs run to their end first; their videos (to leave out of the measure)."""
    tenant = new_tenant("warmup")
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    events = Events()
    try:
        await events.watch(nc, tenant)
        await submit(nc.jetstream(), tenant, [f"{tenant}-{n}" for n in range(WARMUP)])
        deadline = time.monotonic() + 2 * generation + 120.0
        await events.until(lambda: len(events.generated_at) + len(events.ended) >= WARMUP, deadline)
    finally:
        await nc.close()
    videos: list[dict[str, Any]] = await control(state, "videos")
    print(f"  {name}: {WARMUP} warm-up jobs ended ({sum(v['retrieves'] for v in videos)} GETs)",
          flush=True)  # fmt: skip
    return videos


async def follow(state: StackState, name: str, jobs: int, generation: float, spread: float) -> Mode:
    warmup = await warm_up(state, name, generation)
    tenant = new_tenant("follow")
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    events = Events()
    try:
        await events.watch(nc, tenant)
        js = nc.jetstream()
        started = time.monotonic()
        for n in range(jobs):  # evenly over `spread` seconds
            await asyncio.sleep(max(0.0, started + n * spread / jobs - time.monotonic()))
            await submit(js, tenant, [f"{tenant}-{n}"])
        print(f"  {name}: {jobs} jobs submitted over {time.monotonic() - started:.0f} s; "
              "waiting for their `generated` events ...", flush=True)  # fmt: skip
        deadline = time.monotonic() + generation + 120.0
        await events.until(lambda: len(events.generated_at) + len(events.ended) >= jobs, deadline)
        await asyncio.sleep(SETTLE_SECONDS)
        earlier = {v["id"] for v in warmup}
        videos = [v for v in await control(state, "videos") if v["id"] not in earlier]
    finally:
        await nc.close()
    lags = [
        events.generated_at[v["id"]] - v["finishes_at"]
        for v in videos
        if v["id"] in events.generated_at
    ]
    return Mode(
        name=name, jobs=len(videos), generated=len(events.generated_at),
        gets=sum(v["retrieves"] for v in videos),
        most_gets=max((v["retrieves"] for v in videos), default=0), lags=lags, ended=events.ended,
        warmup_gets=sum(v["retrieves"] for v in warmup), warmup_jobs=len(warmup),
    )  # fmt: skip


def report(modes: list[Mode], jobs: int, generation: float, spread: float) -> None:
    print(f"\nP4 following jobs: {jobs} jobs per mode, generation {generation:g} s (fixed, no "
          f"queue), submitted evenly over {spread:g} s; no poll hint, no rate limits")  # fmt: skip
    print(f"  fewest GETs the generation time allows: {FEWEST_GETS_PER_JOB:g} per job "
          "(one retrieve right at the known completion time)")  # fmt: skip
    print(f"  {'mode':<9} {'videos':>6} {'generated':>9} {'GETs':>6} {'GETs/job':>8} "
          f"{'x fewest':>8} {'most':>5} {'lag p50':>8} {'lag p95':>8} {'lag max':>8}")  # fmt: skip
    for m in modes:
        print(f"  {m.name:<9} {m.jobs:>6} {m.generated:>9} {m.gets:>6} {m.gets_per_job:>8.2f} "
              f"{m.gets_per_job / FEWEST_GETS_PER_JOB:>7.2f}x {m.most_gets:>5} "
              f"{m.lag(0.5):>7.2f}s {m.lag(0.95):>7.2f}s {m.lag(1.0):>7.2f}s")  # fmt: skip
        if m.warmup_jobs:
            print(f"    cold start (not counted): {m.warmup_jobs} warm-up jobs, "
                  f"{m.warmup_gets / m.warmup_jobs:.2f} GETs/job")  # fmt: skip
        if m.ended or m.generated < m.jobs:
            print(f"    {m.name}: {m.jobs - m.generated} not generated; ended otherwise: "
                  f"{dict(list(m.ended.items())[:5])}")  # fmt: skip
    by_name = {m.name: m for m in modes}
    if (p := by_name.get("polling")) is not None:
        ratio = p.gets_per_job / FEWEST_GETS_PER_JOB
        ok = ratio <= POLLING_RATIO_GOAL and p.generated == p.jobs == jobs
        print(f"  polling only: {p.gets_per_job:.2f} GETs/job = {ratio:.2f}x the fewest "
              f"(goal <= {POLLING_RATIO_GOAL:g}x): {pass_fail(ok)}")  # fmt: skip
    if (w := by_name.get("webhooks")) is not None:
        gets_ok = w.gets_per_job <= WEBHOOK_GETS_GOAL and w.generated == w.jobs == jobs
        lag_ok = w.lag(0.5) <= WEBHOOK_LAG_P50_GOAL
        print(f"  webhooks: {w.gets_per_job:.2f} GETs/job (goal <= {WEBHOOK_GETS_GOAL:g}): "
              f"{pass_fail(gets_ok)}; lag p50 {w.lag(0.5):.2f} s (goal <= "
              f"{WEBHOOK_LAG_P50_GOAL:g} s): {pass_fail(lag_ok)}")  # fmt: skip


def main(jobs: int, generation: float, spread: float) -> None:
    print(f"P4: {jobs} jobs per mode, generation {generation:g} s, polling only then webhooks")
    modes = [run(webhooks, jobs, generation, spread) for webhooks in (False, True)]
    report(modes, jobs, generation, spread)


if __name__ == "__main__":
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else int(env_number("BENCH_FOLLOW_JOBS", 120))
    generation = (
        float(sys.argv[2]) if len(sys.argv) > 2 else env_number("BENCH_GENERATION_SECONDS", 20.0)
    )
    main(jobs, generation, env_number("BENCH_FOLLOW_SPREAD_SECONDS", 2 * generation))

"""P8, fast under upstream faults: 100 jobs through the whole pipeline with the upstream
misbehaving, against the same jobs with it behaving, each on a fresh embedded stack, in one run.

Run: python -m bench.faults [jobs] [generation_seconds]
     (or BENCH_FAULT_JOBS, BENCH_FAULT_GENERATION_SECONDS; make bench runs it; default 100 jobs
     of a fixed 2 s: about 2 minutes for both runs)

The faults (issue 18): 20% 5xx and 10% 429 on create and retrieve, 30% of the creates the
simulator makes answered with a dropped connection (the ambiguous create), set at the
simulator's start (CLIPLINE_SIM_FAULTS, seeded). Both runs: rate limits lifted
(CLIPLINE_RATE_RPM=100000, CLIPLINE_RATE_CONCURRENCY=1000, the simulator's tier off), small
assets, webhooks on (the stack's default), the built-in registry. All jobs are published at
once over NATS; the time of a run is from the first publish to the last `completed` event.
Goal: the faulted run within 3x the clean one (FAIL printed otherwise, exit status 0). Every job
must complete with exactly one upstream create (the simulator's /control/creates), or the run
fails (exit status 1).

Where the time goes, per run: each job's time in each stage (from its events' arrival here:
accepted -> admitted -> submitted -> generated -> completed), the upstream requests by the
simulator's accounting (create attempts by status, lists, retrieves, webhook deliveries), and
every timing decision the submitter and poller made, by kind (one DEBUG line each on the
`clipline.waits` logger, turned on with CLIPLINE_LOG_DEBUG and read from the services' logs):
error backoffs, waits after a 429 (with the Retry-After asked), rate-state waits, reconcile
lists (their duration), poll waits.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg

from bench.pipeline import (
    NO_RATE_LIMITS,
    control,
    env_number,
    new_tenant,
    stack,
    submit,
    until,
    verdict,
)
from clipline.stack import StackOptions, StackState
from shared.contracts.ids import job_id_for

RATIO_GOAL = 3.0
FAULTS = {
    "seed": 18,
    "operations": ["create", "retrieve"],
    "error_rate": 0.2,
    "rate_limit_rate": 0.1,
    "drop_after_create_rate": 0.3,
}
STAGES = (
    ("published", "accepted", "intake"),
    ("accepted", "admitted", "admission"),
    ("admitted", "submitted", "submit"),
    ("submitted", "generated", "generate+follow"),
    ("generated", "completed", "store"),
)
TERMINAL = frozenset({"failed", "rejected", "timed_out", "completed", "cancelled"})
WAIT_LINE = re.compile(
    r"clipline\.waits: job=(?P<job>\S+) why=(?P<why>\S+) seconds=(?P<s>[\d.]+) asked=(?P<a>\S+)"
)


@dataclass
class Timeline:
    """When each event kind of each job first arrived here (wall clock)."""

    at: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    ended: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        arrived = time.time()
        parts = msg.subject.split(".")
        kind, job_id = parts[2], parts[-1]
        self.at[job_id].setdefault(kind, arrived)
        if kind in TERMINAL:
            reason = json.loads(msg.data).get("reason") or ""
            self.ended.setdefault(job_id, f"{kind} {reason}".strip())
        self.changed.set()

    async def until_ended(self, jobs: int, deadline: float) -> bool:
        return await until(self.changed, lambda: len(self.ended) >= jobs, deadline)


@dataclass(frozen=True)
class Wait:
    job: str
    why: str
    seconds: float
    asked: float | None


@dataclass
class Run:
    name: str
    jobs: int
    seconds: float
    timeline: Timeline
    job_ids: list[str]
    creates: dict[str, int]
    dropped: int
    create_attempts: dict[str, Counter[int]]
    retrieves: dict[str, int]
    webhooks: list[dict[str, Any]]
    waits: list[Wait]
    lags: list[float]

    @property
    def completed(self) -> int:
        return sum(1 for j in self.job_ids if self.timeline.ended.get(j) == "completed")

    @property
    def exactly_once(self) -> bool:
        return all(self.creates.get(j, 0) == 1 for j in self.job_ids)


def options(generation: float, faults: dict[str, Any] | None) -> StackOptions:
    env = {
        **NO_RATE_LIMITS,
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_LOG_DEBUG": "clipline.waits",
    }
    if faults:
        env["CLIPLINE_SIM_FAULTS"] = json.dumps(faults)
    return StackOptions(generation_seconds=generation, queue_seconds=0.0, env=env)


def run(name: str, jobs: int, generation: float, faults: dict[str, Any] | None) -> Run:
    print(f"  {name}: starting a stack ...", flush=True)
    with stack(f"faults-{name}", options(generation, faults)) as state:
        return asyncio.run(measure(state, name, jobs))


async def measure(state: StackState, name: str, jobs: int) -> Run:
    tenant = new_tenant(f"f{name[:4]}")
    keys = [f"{tenant}-{n}" for n in range(jobs)]
    job_ids = [job_id_for(tenant, key) for key in keys]
    timeline = Timeline()
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=timeline.on_event)
        started, wall = time.monotonic(), time.time()
        for job_id in job_ids:
            timeline.at[job_id]["published"] = wall
        await submit(nc.jetstream(), tenant, keys)
        await timeline.until_ended(jobs, time.monotonic() + 300.0)
        last = max((t.get("completed", 0.0) for t in timeline.at.values()), default=wall)
        seconds = (last - wall) if len(timeline.ended) == jobs else time.monotonic() - started
    finally:
        await nc.close()
    print(f"  {name}: {len(timeline.ended)} of {jobs} ended in {seconds:.1f} s", flush=True)
    mine = set(job_ids)
    creates: Counter[str] = Counter(
        c["client_request_id"] for c in await control(state, "creates")
        if c["client_request_id"] in mine
    )  # fmt: skip
    dropped = sum(
        1
        for c in await control(state, "creates")
        if c["client_request_id"] in mine and c["dropped"]
    )
    video_job = {
        c["video_id"]: c["client_request_id"] for c in await control(state, "creates")
        if c["client_request_id"] in mine
    }  # fmt: skip
    attempts: dict[str, Counter[int]] = defaultdict(Counter)
    for a in await control(state, "attempts"):
        if a["operation"] == "create" and a["client_request_id"] in mine:
            attempts[a["client_request_id"]][a["status"]] += 1
    videos = [v for v in await control(state, "videos") if v["id"] in video_job]
    retrieves = {video_job[v["id"]]: v["retrieves"] for v in videos}
    lags = [
        timeline.at[video_job[v["id"]]]["generated"] - v["finishes_at"]
        for v in videos
        if "generated" in timeline.at[video_job[v["id"]]]
    ]
    webhooks = [w for w in await control(state, "webhooks") if w["video_id"] in video_job]
    return Run(
        name=name, jobs=jobs, seconds=seconds, timeline=timeline, job_ids=job_ids,
        creates=dict(creates), dropped=dropped, create_attempts=dict(attempts),
        retrieves=retrieves, webhooks=webhooks, waits=read_waits(state, mine), lags=lags,
    )  # fmt: skip


def read_waits(state: StackState, jobs: set[str]) -> list[Wait]:
    """Every `clipline.waits` line of the stack's processes about these jobs."""
    waits = []
    for process in state.processes:
        path = Path(process.log) if process.log else None
        if path is None or not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = WAIT_LINE.search(line)
            if m and m["job"] in jobs:
                asked = None if m["a"] == "-" else float(m["a"])
                why = f"{process.name.rstrip('0123456789-')} {m['why']}"
                waits.append(Wait(m["job"], why, float(m["s"]), asked))
    return waits


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(r: Run) -> None:
    print(f"\n  {r.name}: {r.completed} of {r.jobs} completed in {r.seconds:.1f} s; "
          f"creates per job: {dict(Counter(r.creates.get(j, 0) for j in r.job_ids))}")  # fmt: skip
    others = Counter(v for v in r.timeline.ended.values() if v != "completed")
    if others:
        print(f"    ended otherwise: {dict(others)}")
    done = [r.timeline.at[j]["completed"] - r.timeline.at[j]["published"]
            for j in r.job_ids if "completed" in r.timeline.at[j]]  # fmt: skip
    print(f"    latency p50 {quantile(done, 0.5):.1f} s, p90 {quantile(done, 0.9):.1f} s, "
          f"max {quantile(done, 1.0):.1f} s")  # fmt: skip
    print(f"    {'stage':<16} {'mean':>6} {'p50':>6} {'p90':>6} {'max':>6}   (seconds per job)")
    for start, end, stage in STAGES:
        spans = [t[end] - t[start] for t in (r.timeline.at[j] for j in r.job_ids)
                 if start in t and end in t]  # fmt: skip
        if spans:
            print(f"    {stage:<16} {statistics.fmean(spans):>6.2f} {quantile(spans, 0.5):>6.2f} "
                  f"{quantile(spans, 0.9):>6.2f} {quantile(spans, 1.0):>6.2f}")  # fmt: skip
    if r.lags:
        print(f"    generated event after upstream completion: p50 {quantile(r.lags, 0.5):.2f} s, "
              f"p90 {quantile(r.lags, 0.9):.2f} s, max {quantile(r.lags, 1.0):.2f} s")  # fmt: skip
    statuses: Counter[int] = Counter()
    for counts in r.create_attempts.values():
        statuses.update(counts)
    tries = [sum(r.create_attempts.get(j, Counter()).values()) for j in r.job_ids]
    print(f"    upstream: create attempts {sum(tries)} ({dict(sorted(statuses.items()))}, "
          f"most for one job {max(tries, default=0)}; {r.dropped} dropped after creating); "
          f"retrieves {sum(r.retrieves.values())} "
          f"(most for one job {max(r.retrieves.values(), default=0)})")  # fmt: skip
    hooks = Counter(w["state"] for w in r.webhooks)
    print(f"    webhooks: {len(r.webhooks)} events, {sum(w['attempts'] for w in r.webhooks)} "
          f"deliveries ({dict(hooks)})")  # fmt: skip
    by_why: dict[str, list[Wait]] = defaultdict(list)
    for w in r.waits:
        by_why[w.why].append(w)
    if by_why:
        print(f"    {'decision':<15} {'count':>5} {'jobs':>4} {'total s':>8} {'max s':>6}  asked")
    for why, ws in sorted(by_why.items(), key=lambda kv: -sum(w.seconds for w in kv[1])):
        asked = [w.asked for w in ws if w.asked is not None]
        said = f"Retry-After/hint total {sum(asked):.1f} s" if asked else ""
        total, most = sum(w.seconds for w in ws), max(w.seconds for w in ws)
        print(f"    {why:<15} {len(ws):>5} {len({w.job for w in ws}):>4} "
              f"{total:>8.1f} {most:>6.2f}  {said}")  # fmt: skip
    submit_stage(r)
    slowest = sorted(r.job_ids, key=lambda j: -latency(r, j))[:3]
    for j in slowest:
        t = r.timeline.at[j]
        steps = " ".join(f"{k}+{t[k] - t['published']:.1f}" for k in sorted(t, key=t.__getitem__))
        mine: defaultdict[str, float] = defaultdict(float)
        for w in r.waits:
            if w.job == j:
                mine[w.why] += w.seconds
        print(f"    slow {j[-8:]}: {steps}; creates {dict(r.create_attempts.get(j, {}))}, "
              f"retrieves {r.retrieves.get(j, 0)}; waits "
              f"{ {k: round(v, 1) for k, v in mine.items()} }")  # fmt: skip


NAK_WAITS = frozenset(
    {"error_backoff", "create_429", "list_429", "rate_wait", "rate_conflict", "claim_lost",
     "in_flight"}
)  # fmt: skip
"""The submitter's decisions that send a job back to the stream for a while (a delayed nak)."""


def submit_stage(r: Run) -> None:
    """The submit stage (admitted -> submitted) of each job: time in the submitter's handlers
    (`handling`, of which slot sleeps, create calls and reconcile lists), time sent back by a
    delayed nak, and the rest: a redelivery not picked up at once, or waiting for a worker."""
    handling: defaultdict[str, float] = defaultdict(float)
    naks: defaultdict[str, float] = defaultdict(float)
    for w in r.waits:
        service, _, why = w.why.partition(" ")
        if service != "submitter":
            continue
        if why == "handling":
            handling[w.job] += w.seconds
        elif why in NAK_WAITS:
            naks[w.job] += w.seconds
    stage = {
        j: t["submitted"] - t["admitted"]
        for j, t in ((j, r.timeline.at[j]) for j in r.job_ids)
        if "submitted" in t and "admitted" in t
    }
    if not stage:
        return
    rest = [stage[j] - handling[j] - naks[j] for j in stage]
    for name, values in (
        ("in handlers", [handling[j] for j in stage]),
        ("sent back (naks)", [naks[j] for j in stage]),
        ("rest: redelivery", rest),
    ):
        mean, p90, most = statistics.fmean(values), quantile(values, 0.9), quantile(values, 1.0)
        print(f"    submit stage, {name:<17} mean {mean:>5.2f} s, p90 {p90:>5.2f} s, "
              f"max {most:>5.2f} s")  # fmt: skip


def latency(r: Run, job: str) -> float:
    t = r.timeline.at[job]
    return t.get("completed", float("inf")) - t["published"]


def main(jobs: int, generation: float) -> int:
    print(f"P8: {jobs} jobs of {generation:g} s, without then with upstream faults {FAULTS}")
    clean = run("clean", jobs, generation, None)
    faulted = run("faults", jobs, generation, FAULTS)
    print(f"\nP8 fast under faults: {jobs} jobs, generation {generation:g} s, no rate limits, "
          "webhooks on")  # fmt: skip
    for r in (clean, faulted):
        report(r)
    ratio = faulted.seconds / clean.seconds if clean.seconds else float("inf")
    sound = all(r.completed == r.jobs and r.exactly_once for r in (clean, faulted))
    print(
        f"\n  without faults {clean.seconds:.1f} s, with faults {faulted.seconds:.1f} s: "
        f"{ratio:.2f}x (goal <= {RATIO_GOAL:g}x): {verdict(ratio <= RATIO_GOAL and sound)}"
    )
    print(f"  every job completed with exactly one upstream create: {verdict(sound)}")
    return 0 if sound else 1


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else int(env_number("BENCH_FAULT_JOBS", 100))
    gen = (
        float(sys.argv[2])
        if len(sys.argv) > 2
        else env_number("BENCH_FAULT_GENERATION_SECONDS", 2.0)
    )
    sys.exit(main(n, gen))

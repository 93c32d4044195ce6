"""P7, storage's CPU per job with small assets: the storage process's CPU milliseconds per job,
now and before this stop's storage changes (goal: at most half of before).

Run: python -m bench.storage_cpu [jobs]   (or BENCH_STORAGE_JOBS; default 300, about 90 s;
     make bench runs it)

Each run is a fresh embedded stack (bench/pipeline.py): the simulator with small assets, no rate
limits, generation in 0.1 s, webhooks on (so a job is `generated` as soon as its video is done).
`jobs` requests are published over NATS; the storage process's CPU (utime + stime of all its
threads, /proc/<pid>/stat) is read just before they are published (storage has nothing to do
until the first `generated`) and again once the last job's `completed` event arrived; CPU ms per
job is that over `jobs`. Storage's CPU while idle (over IDLE_SECONDS, 5, just before) is printed
beside it, as the part of the figure it accounts for; it is not subtracted. Jobs per second
through storage are `jobs` over the time from the first `generated` to the last `completed`
event; storage's CPU share of that time (CPU-s per wall-s) says whether storage was the limit
(near 1.0: one core busy) or the stages before it were.

"Before" is storage as of BENCH_STORAGE_BEFORE (default empty since the NATS identities: code
older than them cannot connect; issue 10 compared with a4c04ec, the commit before its stop:
the three variants one after another, minio's blocking client in threads), measured in the same
run on its own fresh stack: that commit's `services/` and `shared/` are unpacked (`git archive`)
into a temporary folder, and the stack's storage process is restarted (`clipline restart`, as
recorded) with PYTHONPATH pointing there; every other process runs today's code. The completion
events tell the two apart (storage before 7eb30a9 puts no presigned `url` in them), so a run
that measured the wrong code stops. BENCH_STORAGE_BEFORE= (empty) skips it; the issue's figure
for before, measured by an earlier session, is printed beside (about 17 ms per job).

A job that does not complete fails the run; a missed goal prints FAIL (exit status 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.msg import Msg

from bench.harness import ROOT, cpu_seconds
from bench.pipeline import NO_RATE_LIMITS, TERMINAL, env_number, new_tenant, stack, submit, verdict
from clipline.stack import StackOptions, StackState, restart

DEFAULT_JOBS = 300
DEFAULT_BEFORE = ""
"""Empty: code from before the NATS identities (issue 17) cannot connect to a stack that needs
them, so the issue-10 baseline (a4c04ec) can no longer run beside today's stack; set
BENCH_STORAGE_BEFORE to a commit that has them to compare against it."""
ISSUE_BEFORE_MS = 17.0  # issue 10, measured by an earlier session
GOAL_RATIO = 0.5
DONE_WITHIN = 300.0
IDLE_SECONDS = 5.0


@dataclass
class Progress:
    """One tenant's jobs: when the first `generated` and the last completion arrived, which jobs
    completed, which ended otherwise, and whether the completions carried presigned URLs."""

    jobs: int
    first_generated: float | None = None
    last_completed: float = 0.0
    completed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    with_urls: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        now = time.monotonic()
        parts = msg.subject.split(".")
        kind, job_id = parts[2], parts[-1]
        if kind == "generated" and self.first_generated is None:
            self.first_generated = now
        elif kind == "completed" and job_id not in self.completed:
            self.completed.add(job_id)
            self.last_completed = now
            assets = json.loads(msg.data)["assets"]
            self.with_urls += all(asset.get("url") for asset in assets)
        elif kind in TERMINAL and kind != "completed":
            self.failed.setdefault(job_id, f"{kind} {json.loads(msg.data).get('reason', '')}")
        if len(self.completed) + len(self.failed) >= self.jobs:
            self.done.set()


@dataclass(frozen=True)
class Measured:
    label: str
    jobs: int
    cpu_seconds: float
    wall_seconds: float  # first `generated` to last `completed`
    idle_share: float  # storage's CPU-s per wall-s with nothing to do, just before

    @property
    def idle_ms_per_job(self) -> float:
        """What storage would have spent idle over the same time, per job (included above)."""
        return 1000 * self.idle_share * self.wall_seconds / self.jobs

    @property
    def ms_per_job(self) -> float:
        return 1000 * self.cpu_seconds / self.jobs

    @property
    def rate(self) -> float:
        return self.jobs / self.wall_seconds

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds


async def through_storage(state: StackState, pid: int, jobs: int, *, urls: bool) -> Progress:
    """`jobs` jobs end to end; storage's CPU read around them. `urls`: whether the storage code
    measured puts presigned URLs in its completion events (today's does, a4c04ec's does not)."""
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    tenant = new_tenant("cpu")
    progress = Progress(jobs)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=progress.on_event)
        await submit(nc.jetstream(), tenant, [f"cpu-{i}" for i in range(jobs)])
        await asyncio.wait_for(progress.done.wait(), DONE_WITHIN)
    finally:
        await nc.close()
    if progress.failed or len(progress.completed) != jobs:
        raise SystemExit(
            f"{len(progress.completed)}/{jobs} jobs completed; others: "
            f"{dict(list(progress.failed.items())[:5])}"
        )
    if (progress.with_urls == jobs) != urls:
        raise SystemExit(
            f"storage ran other code than meant: {progress.with_urls}/{jobs} completions "
            f"had presigned URLs, expected {'all' if urls else 'none'}"
        )
    return progress


def measure(label: str, jobs: int, before_code: Path | None) -> Measured:
    """A fresh stack; with `before_code`, its storage restarted on that code first."""
    env = {**NO_RATE_LIMITS, "CLIPLINE_SIM_SMALL_ASSETS": "true"}
    options = StackOptions(generation_seconds=0.1, queue_seconds=0.0, poll_after_ms=100, env=env)
    with stack(f"storage-cpu-{label}", options) as state:
        if before_code is not None:
            info = state.find("storage")
            info.env = {**info.env, "PYTHONPATH": str(before_code)}
            state.save()
            restart(Path(state.home), "storage")
        now = StackState.load(Path(state.home))  # restarted: storage's new PID is recorded
        assert now is not None
        pid = now.find("storage").pid
        idle_from, idle_cpu = time.monotonic(), cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)  # a fixed window to measure over, not a wait for a condition
        idle_share = (cpu_seconds(pid) - idle_cpu) / (time.monotonic() - idle_from)
        cpu_before = cpu_seconds(pid)
        progress = asyncio.run(through_storage(state, pid, jobs, urls=before_code is None))
        used = cpu_seconds(pid) - cpu_before
    assert progress.first_generated is not None
    wall = progress.last_completed - progress.first_generated
    return Measured(label, jobs, used, wall, idle_share)


def unpack(commit: str, into: Path) -> Path:
    """`services/` and `shared/` as of `commit`, unpacked under `into` (the repository itself is
    not touched: no worktree, no checkout)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "services", "shared"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def show(m: Measured) -> None:
    print(
        f"  {m.label:<7} {m.ms_per_job:6.2f} ms CPU/job   {m.rate:6.1f} jobs/s through storage   "
        f"storage CPU {m.cpu_seconds:5.2f} s over {m.wall_seconds:5.2f} s "
        f"({m.cpu_share:.2f} of a core; idle it spends {m.idle_share:.3f}, "
        f"{m.idle_ms_per_job:.2f} ms/job of the figure)"
    )


def main(jobs: int) -> None:
    before_commit = os.environ.get("BENCH_STORAGE_BEFORE", DEFAULT_BEFORE).strip()
    print(
        f"P7 storage CPU per job: {jobs} jobs with small assets, no rate limits, generation 0.1 s; "
        f"storage's utime+stime from before the first generated to the last completed"
    )
    before = None
    if before_commit:
        with tempfile.TemporaryDirectory(prefix="clipline-bench-before-") as folder:
            before = measure("before", jobs, unpack(before_commit, Path(folder)))
        show(before)
    now = measure("now", jobs, None)
    show(now)
    reference = before.ms_per_job if before else ISSUE_BEFORE_MS
    ratio = now.ms_per_job / reference
    where = f"storage as of {before_commit}, this run" if before else "the issue's figure"
    print(
        f"  before: {reference:.2f} ms/job ({where}; the issue measured about "
        f"{ISSUE_BEFORE_MS:.0f} ms/job earlier)"
    )
    print(f"  now/before: {ratio:.2f}   goal <= {GOAL_RATIO}  {verdict(ratio <= GOAL_RATIO)}")


if __name__ == "__main__":
    main(
        int(sys.argv[1])
        if len(sys.argv) > 1
        else int(env_number("BENCH_STORAGE_JOBS", DEFAULT_JOBS))
    )

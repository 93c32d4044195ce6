"""What bench/e2e.py prints and plots: each phase's figures next to its goal, the messages per
job by class, and the offered-load sweep (table and docs/performance-load.svg)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.e2e_stats import Latency, Usage, breakdown, completion_rate, summed
from bench.pipeline import verdict
from bench.svgplot import Panel, Series, render

GOAL_RATIO, GOAL_BEYOND = 1.0, 2.0
GOAL_SERVICES_MS = 15.0
GOAL_IN_MSGS = 40.0
OTHERS = ("nats", "seaweedfs", "simulator", "bench")


@dataclass
class Phase:
    """One side's jobs in one phase: when it started, when each job completed (monotonic), the
    latencies (request to completed), clipline's per-stage latencies, CPU seconds per process
    over the phase and nats-server's /varz growth per job."""

    name: str
    jobs: int
    start: float
    done: list[float]
    latencies: list[float]
    stages: dict[str, Latency] = field(default_factory=dict)
    settled: float | None = None  # when the stack was quiet again after the phase (monotonic)
    cpu: dict[str, Usage] = field(default_factory=dict)
    cpu_wall: float = 0.0  # the time between the two CPU readings
    varz: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(self.done) - self.start

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def latency(self) -> Latency:
        return Latency.of(self.latencies)

    def ms_per_job(self, process: str) -> float:
        return 1000 * self.cpu.get(process, Usage()).total / self.jobs

    def split_per_job(self, process: str) -> str:
        """User + system ms per job, and context switches per job."""
        usage = self.cpu.get(process, Usage())
        return (f"{1000 * usage.user / self.jobs:6.2f} + {1000 * usage.system / self.jobs:6.2f}"
                f"  {usage.switches / self.jobs:6.1f}")  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One offered rate of the sweep: the script's jobs and clipline's."""

    offered: float
    jobs: int
    script: Phase
    clipline: Phase


def _latency(latency: Latency) -> str:
    return (f"p50 {latency.p50:6.2f} s  p90 {latency.p90:6.2f} s  p99 {latency.p99:6.2f} s  "
            f"max {latency.max:6.2f} s")  # fmt: skip


def report_burst(naive: Phase, ours: Phase, services: Sequence[str]) -> None:
    print(f"\nAll at once ({ours.jobs} jobs each; latency: request to completed):")
    for phase in (naive, ours):
        print(f"  {phase.name:<11} {phase.seconds:7.2f} s  {phase.rate:7.1f} jobs/s   "
              f"{_latency(phase.latency)}")  # fmt: skip
    if ours.settled is None:
        print("  WARNING: the stack had not settled when clipline's figures below were taken")
    else:
        print(
            f"  clipline's stack settled {ours.settled - ours.seconds - ours.start:.1f} s after "
            "the last completion (CPU and messages below include that trailing work)"
        )
    ratio = ours.rate / naive.rate
    print(f"  ratio       {ratio:.2f}x   goal >= {GOAL_RATIO:.1f}x  {verdict(ratio >= GOAL_RATIO)}"
          f"   (beyond: {GOAL_BEYOND:.0f}x  {verdict(ratio >= GOAL_BEYOND)})")  # fmt: skip
    print("  clipline's stages (time between a job's events as they arrived here):")
    for stage, latency in ours.stages.items():
        print(f"    {stage:<24} {_latency(latency)}")
    print("\n  CPU ms per job: clipline (user + system, context switches per job, CPU-s per "
          "wall-s) | the script's phase")  # fmt: skip
    for process in (*services, *OTHERS):
        note = "  (this process: publisher and event subscriber | the script)" * (
            process == "bench"
        )
        share = ours.cpu.get(process, Usage()).total / ours.cpu_wall
        print(f"    {process:<15} {ours.ms_per_job(process):8.2f} ({ours.split_per_job(process)} "
              f"{share:5.2f}) | {naive.ms_per_job(process):8.2f}{note}")  # fmt: skip
    total = sum(ours.ms_per_job(s) for s in services)
    print(f"    {'five services':<15} {total:8.2f} {'':31} | "
          f"{sum(naive.ms_per_job(s) for s in services):8.2f}   goal <= {GOAL_SERVICES_MS:g} ms "
          f"(clipline)  {verdict(total <= GOAL_SERVICES_MS)}")  # fmt: skip
    varz = ours.varz
    print(f"\n  nats-server /varz per clipline job: in_msgs {varz['in_msgs']:.1f}  goal <= "
          f"{GOAL_IN_MSGS:g}  {verdict(varz['in_msgs'] <= GOAL_IN_MSGS)};  out_msgs "
          f"{varz['out_msgs']:.1f};  in {varz['in_bytes'] / 1000:.1f} kB, out "
          f"{varz['out_bytes'] / 1000:.1f} kB", flush=True)  # fmt: skip


def report_breakdown(
    counts: Counter[str], jobs: int, seconds: float, settled: bool, errors: list[str]
) -> None:
    rows = breakdown(counts, jobs)
    print(f"\nWhere a job's messages go ({jobs} jobs at once under a `>` subscription, "
          f"{seconds:.1f} s; messages per job by class):")  # fmt: skip
    for name, value in rows:
        print(f"    {name:<40} {value:7.2f}")
    print(f"    {'all':<40} {summed(rows):7.2f}")
    if not settled:
        print("  (traffic had not paused when counting stopped)")
    if errors:
        print(f"  WARNING: the subscription reported {len(errors)} errors: {errors[:3]}")


def report_idle(counts: Counter[str], seconds: float) -> None:
    """The stack's own traffic with no job in flight (counted before the jobs above)."""
    rows = breakdown(counts, 1)
    print(f"  the idle stack's own traffic, just before ({seconds:.1f} s): "
          f"{summed(rows) / seconds:.1f} msgs/s")  # fmt: skip
    for name, count in rows[:8]:
        print(f"    {name:<40} {count / seconds:7.1f}/s")


def report_sweep(steps: Sequence[Step]) -> None:
    print("\n  offered  | clipline: jobs/s   p50 s   p99 s | script: jobs/s   p50 s   p99 s")
    for step in steps:
        ours, theirs = step.clipline, step.script
        print(f"  {step.offered:7g}  | {completion_rate(ours.done):14.1f} "
              f"{ours.latency.p50:7.2f} {ours.latency.p99:7.2f} | "
              f"{completion_rate(theirs.done):12.1f} {theirs.latency.p50:7.2f} "
              f"{theirs.latency.p99:7.2f}")  # fmt: skip


def plot(steps: Sequence[Step], path: Path) -> None:
    def line(name: str, pick: str, y: str) -> Series:
        phases = [(s.offered, getattr(s, pick)) for s in steps]
        if y == "rate":
            return Series(name, [(x, completion_rate(p.done)) for x, p in phases])
        return Series(name, [(x, p.latency.p99) for x, p in phases])

    panels = [
        Panel("Throughput achieved", "offered load (jobs/s)", "completed jobs/s",
              [line("clipline", "clipline", "rate"), line("the script", "script", "rate")],
              diagonal=True),
        Panel("p99 latency", "offered load (jobs/s)", "request to completed (s)",
              [line("clipline", "clipline", "p99"), line("the script", "script", "p99")]),
    ]  # fmt: skip
    caption = f"python -m bench.e2e: {steps[0].jobs / steps[0].offered:g} s per offered rate"
    path.write_text(render(panels, caption))

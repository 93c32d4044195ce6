"""Durability settings, measured: what nats-server's `jetstream.sync_interval` costs clipline.

Run: python -m bench.durability [jobs]   (or BENCH_DURABILITY_JOBS; default 500, about 3 minutes
     with the cluster; make bench runs it)

Each setting gets a fresh embedded stack (`StackOptions(nats_sync=..., nats_cluster=...)`, the
stack `clipline up --nats-sync ... --nats-cluster ...` starts; its folder on this machine's disk,
whose filesystem is printed), the simulator in zero-latency mode (generation 0 s, no queue, small
assets, no rate-limit tier), clipline's rate limits lifted, webhooks on. Settings:
BENCH_DURABILITY_SYNCS (default `default,always`; `default` is the server's own 2 minutes, any
other value is passed as is, e.g. `10s`) on each of BENCH_DURABILITY_NODES (default `1,3`: one
nats-server, then the 3-node cluster with every stream and bucket at 3 replicas). The
settings run in that order, BENCH_DURABILITY_ROUNDS times (default 1) over; a round's figures
are compared with that round's default on one node. Per stack, in order:
1. the server's settings from every node's /varz (`jetstream.config.sync_interval`,
   `sync_always`): a node that does not run the asked setting fails the run;
2. raw JetStream writes: acknowledged publishes to a scratch stream (file storage, the stack's
   replicas) one at a time for PROBE_SECONDS (ack latency p50/p99: one write's fsync, when
   `always`), then PROBE_DEPTH in flight for PROBE_SECONDS (writes per second);
3. five warm-up jobs (not counted);
4. `jobs` job requests published at once over NATS (as bench/e2e.py's clipline phase):
   the jobs' events read from the jobs stream (an ordered consumer, so none is missed);
   the admission rate (jobs per second from the first request to the last job's `admitted`
   event: intake's acceptance and pricing_guard's budget decision, every job's first writes)
   and the end-to-end rate (to the last `completed` event), every job completing (the run fails
   otherwise). The pipeline's later stages run alongside admission, as they do in production;
5. in the first round only, kill -9: PROBE_DEPTH writes in flight to a scratch stream (at the
   stack's replicas); once KILL_AFTER are acknowledged every nats-server is SIGKILLed at once,
   started again as recorded (`clipline.stack.up`), and each acknowledged write read back: how
   many are lost. A process crash; an OS crash or power loss, which also loses the page cache,
   cannot be staged here (docs/reliability.md).
The disk: FSYNC_SAMPLES appends of 4 KiB, each fsynced, in the stacks' folder before the first
stack (p50/p99): the floor under `always`. The report: per setting, the median over the rounds
of each figure and of each round's ratio against that round's one-node default; with several
rounds, every round's ratios too. On a 2-core machine shared with other work the rates vary
from round to round: BENCH_DURABILITY_ROUNDS=3 or more for figures to quote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.e2e_stats import percentile
from bench.pipeline import FOLLOW_ENV, TERMINAL, env_number, new_tenant, stack, submit
from clipline.servers import sync_interval
from clipline.stack import StackOptions, StackState, up
from shared.config import nats_servers
from shared.contracts import JobRecordV1, record_key
from shared.streams import JOBS_BUCKET

DEFAULT_JOBS = 500
WARM_UP = 5
PROBE_SECONDS = 2.0
PROBE_DEPTH = 256
PROBE_STREAM = "BENCH_DURABILITY"
PROBE_SUBJECT = "bench.durability.probe"
KILL_STREAM = "BENCH_DURABILITY_KILL"
KILL_SUBJECT = "bench.durability.kill"
KILL_AFTER = 2000  # acknowledged writes before every nats-server is killed
RECOVER_SECONDS = 60.0
FSYNC_SAMPLES = 200
DEADLINE_SECONDS = 120.0  # for the burst's jobs to end, plus half a second a job
DEFAULT_INTERVAL_NS = 120 * 10**9  # nats-server's default sync_interval: 2 minutes


# --- pure: settings, what the server must report, ratios (tests/unit/test_durability.py) -------


@dataclass(frozen=True)
class Setting:
    """One stack to measure: its nats-server count and its `sync_interval` (None: default)."""

    nodes: int
    sync: str | None

    @property
    def label(self) -> str:
        where = "1 node (R1)" if self.nodes == 1 else f"{self.nodes} nodes (R{self.nodes})"
        return f"{where}, sync {self.sync or 'default (2 min)'}"

    @property
    def baseline(self) -> Setting:
        """The setting this one's cost is measured against: the default on one node."""
        return Setting(1, None)


def parse_settings(syncs: str, nodes: str) -> list[Setting]:
    """BENCH_DURABILITY_SYNCS x BENCH_DURABILITY_NODES, the default first on each node count,
    the one-node default always included (every ratio is against it)."""
    sync_list: list[str | None] = [None]
    for raw in syncs.split(","):
        if raw.strip():
            parsed = sync_interval(raw)  # a typo fails here, before a stack starts
            if parsed not in sync_list:
                sync_list.append(parsed)
    node_list = sorted({int(n) for n in nodes.split(",") if n.strip()} | {1})
    if any(n not in (1, 3) for n in node_list):
        raise ValueError(f"nodes must be 1 or 3, not {nodes!r}")
    return [Setting(n, s) for n in node_list for s in sync_list]


_UNITS_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def duration_ns(sync: str) -> int | None:
    """A sync_interval value in nanoseconds as /varz reports it; None for `always`."""
    if sync == "always":
        return None
    for unit in ("ms", "s", "m", "h"):  # "ms" before "s" and "m"
        number = sync.removesuffix(unit)
        if number != sync and number.replace(".", "", 1).isdigit():
            return round(float(number) * _UNITS_NS[unit])
    raise ValueError(f"sync_interval {sync!r}: `always` or a duration such as 10s, 500ms, 2m")


def runs_setting(jetstream_config: dict[str, Any], sync: str | None) -> bool:
    """Whether a node's /varz `jetstream.config` shows it runs `sync` (None: the default)."""
    always = bool(jetstream_config.get("sync_always", False))
    interval = jetstream_config.get("sync_interval")
    if sync == "always":
        return always
    expected = DEFAULT_INTERVAL_NS if sync is None else duration_ns(sync)
    return not always and interval == expected


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline > 0 else "-"


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Probe:
    latencies_ms: list[float]
    sequential_rate: float
    deep_rate: float


@dataclass
class Burst:
    jobs: int
    admission_rate: float
    e2e_rate: float
    seconds: float


@dataclass(frozen=True)
class Killed:
    """The kill -9 check: writes acknowledged before every nats-server was killed, and how
    many of them the restarted servers no longer have."""

    acknowledged: int
    lost: int


@dataclass
class Measured:
    setting: Setting
    probe: Probe
    burst: Burst
    killed: Killed | None = None


def fsync_floor(folder: Path) -> list[float]:
    """FSYNC_SAMPLES appends of 4 KiB to one file in `folder`, each fsynced: ms per fsync."""
    path = folder / "fsync-probe"
    took = []
    block = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(FSYNC_SAMPLES):
            os.write(fd, block)
            start = time.perf_counter()
            os.fsync(fd)
            took.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return took


def filesystem(folder: Path) -> str:
    """The filesystem type and device under `folder` (the longest mount point above it)."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind, *_ = line.split()
            if str(folder).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, kind, device)
    return f"{best[1]} on {best[2]}"


def monitors(state: StackState) -> list[str]:
    """Every nats-server's monitoring endpoint (its recorded health URL is on that port)."""
    out = []
    for proc in state.processes:
        if proc.name == "nats" or proc.name.startswith("nats-"):
            health = urlsplit(proc.health)
            out.append(f"{health.scheme}://{health.netloc}")
    return out


async def check_setting(state: StackState, setting: Setting) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for monitor in monitors(state):
            answer = await http.get(f"{monitor}/varz")
            answer.raise_for_status()
            config = answer.json().get("jetstream", {}).get("config", {})
            if not runs_setting(config, setting.sync):
                raise SystemExit(f"{monitor} does not run {setting.label}: {config}")


async def probe(nc: Client, replicas: int) -> Probe:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=PROBE_STREAM,
            subjects=[f"{PROBE_SUBJECT}.>"],
            storage=StorageType.FILE,
            num_replicas=replicas,
        )
    )
    payload = b"x" * 512  # about a job event's size
    try:
        latencies = []
        start = time.perf_counter()
        while time.perf_counter() - start < PROBE_SECONDS:
            sent = time.perf_counter()
            await js.publish(f"{PROBE_SUBJECT}.one", payload)
            latencies.append((time.perf_counter() - sent) * 1000)
        sequential = len(latencies) / (time.perf_counter() - start)
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < PROBE_SECONDS:
            await asyncio.gather(
                *(js.publish(f"{PROBE_SUBJECT}.deep", payload) for _ in range(PROBE_DEPTH))
            )
            done += PROBE_DEPTH
        deep = done / (time.perf_counter() - start)
    finally:
        await js.delete_stream(PROBE_STREAM)
    return Probe(latencies, sequential, deep)


@dataclass
class Ends:
    """When each job's `admitted` and terminal event first arrived (monotonic)."""

    jobs: int
    admitted: dict[str, float] = field(default_factory=dict)
    ended: dict[str, tuple[str, float]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        now = time.monotonic()
        parts = msg.subject.split(".")
        kind, job_id = parts[2], parts[-1]
        if kind == "admitted":
            self.admitted.setdefault(job_id, now)
        elif kind in TERMINAL and job_id not in self.ended:
            self.ended[job_id] = (kind, now)
            if len(self.ended) >= self.jobs:
                self.done.set()


async def records(nc: Client, tenant: str, job_ids: list[str]) -> dict[str, str]:
    """The recorded status of each of `job_ids` (a job whose terminal event never arrived:
    stuck, or an event this subscriber missed?)."""
    kv = await nc.jetstream().key_value(JOBS_BUCKET)
    out = {}
    for job_id in job_ids[:5]:
        entry = await kv.get(record_key(tenant, job_id))
        out[job_id] = JobRecordV1.model_validate_json(entry.value or b"{}").status.value
    return out


async def burst(nc: Client, jobs: int, name: str) -> Burst:
    """`jobs` requests at once; every job must complete."""
    tenant = new_tenant(name)
    ends = Ends(jobs)
    # From the jobs stream (an ordered consumer), not a core subscription: an event a core
    # subscriber misses would read as a job that never ended.
    sub = await nc.jetstream().subscribe(
        f"clipline.job.*.v1.{tenant}.*", cb=ends.on_event, ordered_consumer=True
    )
    try:
        await nc.flush()
        start = time.monotonic()
        await submit(nc.jetstream(), tenant, [f"{name}-{i}" for i in range(jobs)])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ends.done.wait(), DEADLINE_SECONDS + jobs / 2)
    finally:
        await sub.unsubscribe()
    completed = [t for kind, t in ends.ended.values() if kind == "completed"]
    if len(completed) != jobs or len(ends.admitted) != jobs:
        others = [f"{j}: {k}" for j, (k, _) in ends.ended.items() if k != "completed"][:5]
        unended = await records(nc, tenant, [j for j in ends.admitted if j not in ends.ended])
        raise SystemExit(
            f"{name}: {len(completed)}/{jobs} completed, {len(ends.admitted)} admitted; {others}; "
            f"no terminal event seen, their records: {unended}"
        )
    admitted_at, completed_at = max(ends.admitted.values()), max(completed)
    return Burst(
        jobs, jobs / (admitted_at - start), jobs / (completed_at - start), completed_at - start
    )


def nats_pids(state: StackState) -> list[int]:
    return [p.pid for p in state.processes if p.name == "nats" or p.name.startswith("nats-")]


async def kill_check(state: StackState, options: StackOptions, replicas: int) -> Killed:
    """Writes PROBE_DEPTH in flight to a scratch stream; once KILL_AFTER are acknowledged,
    SIGKILL every nats-server of the stack (by its recorded PID) mid-write, start them again as
    recorded (`clipline.stack.up` heals dead processes, a cluster's together), and read back
    every acknowledged sequence. A process crash, not an OS crash: the page cache survives it."""

    async def expected(_: Exception) -> None:
        pass  # the servers were killed on purpose: refused reconnects until they are back

    nc = await nats.connect(
        nats_servers(state.nats_url), user_credentials=state.nats_creds,
        max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=expected,
    )  # fmt: skip
    js = nc.jetstream()
    try:
        await js.add_stream(
            StreamConfig(
                name=KILL_STREAM, subjects=[f"{KILL_SUBJECT}.>"], storage=StorageType.FILE,
                num_replicas=replicas,
            )
        )  # fmt: skip
        acked: list[int] = []
        enough = asyncio.Event()

        async def writer() -> None:
            while True:
                answers = await asyncio.gather(
                    *(js.publish(f"{KILL_SUBJECT}.w", b"k" * 512, timeout=5)
                      for _ in range(PROBE_DEPTH)),
                    return_exceptions=True,
                )  # fmt: skip
                acked.extend(a.seq for a in answers if isinstance(a, PubAck))
                if len(acked) >= KILL_AFTER:
                    enough.set()
                if any(isinstance(a, BaseException) for a in answers):
                    return  # the servers are gone: what was acknowledged is what counts

        task = asyncio.create_task(writer())
        await asyncio.wait_for(enough.wait(), 60)
        for pid in nats_pids(state):  # every node at once
            os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(task, 60)
        await asyncio.to_thread(up, Path(state.home), options)
        deadline = time.monotonic() + RECOVER_SECONDS
        lost = 0
        for seq in acked:
            while True:
                try:
                    await js.get_msg(KILL_STREAM, seq)
                    break
                except NotFoundError:
                    lost += 1
                    break
                except (nats.errors.Error, TimeoutError):  # not back yet: until the deadline
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)  # a retry's pace, not synchronisation
        return Killed(len(acked), lost)
    finally:
        await nc.close()


async def measure_stack(
    state: StackState, setting: Setting, jobs: int, options: StackOptions, kill: bool
) -> Measured:
    await check_setting(state, setting)
    nc = await nats.connect(nats_servers(state.nats_url), user_credentials=state.nats_creds)
    try:
        raw = await probe(nc, setting.nodes)
        await burst(nc, WARM_UP, "warm")
        measured = await burst(nc, jobs, "burst")
    finally:
        await nc.close()
    killed = await kill_check(state, options, setting.nodes) if kill else None
    return Measured(setting, raw, measured, killed)


def measure(setting: Setting, jobs: int, kill: bool) -> Measured:
    options = StackOptions(
        generation_seconds=0.0,
        queue_seconds=0.0,
        env=FOLLOW_ENV,
        nats_sync=setting.sync,
        nats_cluster=setting.nodes,
    )
    with stack("durability", options) as state:
        result = asyncio.run(measure_stack(state, setting, jobs, options, kill))
    p = result.probe
    print(
        f"  {setting.label:34} writes: one at a time {p.sequential_rate:7.0f}/s "
        f"(p50 {percentile(p.latencies_ms, 50):.2f} ms), {PROBE_DEPTH} deep "
        f"{p.deep_rate:7.0f}/s; jobs: admitted {result.burst.admission_rate:6.1f}/s, "
        f"completed {result.burst.e2e_rate:6.1f}/s"
        + ("" if result.killed is None else
           f"; kill -9: lost {result.killed.lost} of {result.killed.acknowledged} acknowledged"),
        flush=True,
    )  # fmt: skip
    return result


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One setting's figures: medians over the rounds, and the median of each round's ratio
    against that round's one-node default."""

    setting: Setting
    ack_p50_ms: float
    ack_p99_ms: float
    writes_one: float
    writes_deep: float
    admitted: float
    completed: float
    x_admitted: float
    x_completed: float
    x_writes: float
    killed: Killed | None


def summarise(rounds: Sequence[Mapping[Setting, Measured]], setting: Setting) -> Row:
    ours = [r[setting] for r in rounds]
    bases = [r[setting.baseline] for r in rounds]
    med = statistics.median

    def x(value: Callable[[Measured], float]) -> float:
        return med(value(o) / value(b) for o, b in zip(ours, bases, strict=True))

    return Row(
        setting,
        ack_p50_ms=med(percentile(m.probe.latencies_ms, 50) for m in ours),
        ack_p99_ms=med(percentile(m.probe.latencies_ms, 99) for m in ours),
        writes_one=med(m.probe.sequential_rate for m in ours),
        writes_deep=med(m.probe.deep_rate for m in ours),
        admitted=med(m.burst.admission_rate for m in ours),
        completed=med(m.burst.e2e_rate for m in ours),
        x_admitted=x(lambda m: m.burst.admission_rate),
        x_completed=x(lambda m: m.burst.e2e_rate),
        x_writes=x(lambda m: m.probe.deep_rate),
        killed=next((m.killed for m in ours if m.killed is not None), None),
    )


def report(rounds: list[dict[Setting, Measured]], settings: Sequence[Setting], jobs: int) -> None:
    print(f"\nDurability settings, {jobs} jobs at once per stack; medians of {len(rounds)} "
          "round(s); ratios (x) against 1 node, default, of the same round")  # fmt: skip
    print(
        f"  {'setting':34} {'ack p50 ms':>10} {'p99 ms':>7} {'writes/s 1':>10} "
        f"{f'writes/s {PROBE_DEPTH}':>12} {'x':>6} {'admitted/s':>10} {'x':>6} "
        f"{'completed/s':>11} {'x':>6}  kill -9 lost"
    )
    for setting in settings:
        row = summarise(rounds, setting)
        killed = "-" if row.killed is None else f"{row.killed.lost} of {row.killed.acknowledged}"
        print(
            f"  {setting.label:34} {row.ack_p50_ms:10.2f} {row.ack_p99_ms:7.2f} "
            f"{row.writes_one:10.0f} {row.writes_deep:12.0f} {row.x_writes:5.2f}x "
            f"{row.admitted:10.1f} {row.x_admitted:5.2f}x {row.completed:11.1f} "
            f"{row.x_completed:5.2f}x  {killed}"
        )
    if len(rounds) > 1:
        print("  each round's ratios (admitted/s, completed/s) against its own 1-node default:")
        for setting in settings:
            if setting == setting.baseline:
                continue
            cells = []
            for r in rounds:
                ours, against = r[setting].burst, r[setting.baseline].burst
                cells.append(
                    f"{ratio(ours.admission_rate, against.admission_rate)}"
                    f"/{ratio(ours.e2e_rate, against.e2e_rate)}"
                )
            print(f"    {setting.label:34} " + "  ".join(cells))


def main(argv: Sequence[str]) -> None:
    jobs = int(argv[0]) if argv else int(env_number("BENCH_DURABILITY_JOBS", DEFAULT_JOBS))
    settings = parse_settings(
        os.environ.get("BENCH_DURABILITY_SYNCS", "default,always"),
        os.environ.get("BENCH_DURABILITY_NODES", "1,3"),
    )
    rounds = int(env_number("BENCH_DURABILITY_ROUNDS", 1))
    folder = Path(tempfile.gettempdir())
    floor = fsync_floor(folder)
    print(
        f"Durability settings: {jobs} jobs per stack, {len(settings)} stacks x {rounds} round(s); "
        f"stacks under {folder} ({filesystem(folder)}): fsync of a 4 KiB append "
        f"p50 {statistics.median(floor):.2f} ms, p99 {percentile(floor, 99):.2f} ms; "
        f"{os.cpu_count()} cores shared",
        flush=True,
    )
    started = time.monotonic()
    results: list[dict[Setting, Measured]] = []
    for index in range(rounds):
        if rounds > 1:
            print(f" round {index + 1}:", flush=True)
        results.append({s: measure(s, jobs, kill=index == 0) for s in settings})
    report(results, settings, jobs)
    print(f"  (whole bench {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Admission under budgets: throughput of pricing_guard under contention with 1 and 2 replicas,
and the latency a budget reservation adds to an admission (p50/p99).

Run: python -m bench.admission [jobs]   (make bench runs it; default 1000 jobs per phase)

1. Added latency: one client, sequential. `KvBudgets.reserve` (one atomic batch over the job's
   reservation and `open` marker and the limited scope's counters, checking the catalog of
   limits, after reading the catalog and counters) next to the write an admission made before
   budgets: one compare-and-set of the job record (get + update), on the same nats-server in the
   same run.
2. Throughput: `jobs` accepted events of one tenant, published at once, against real
   pricing_guard processes (1, then 2 replicas) with a budget that fits half of them. Every
   batch writes the same counters, so the replicas contend on every write. Printed:
   decisions per second, the overshoot (admitted beyond what fits; must be 0), and the
   GETs and writes on the budgets bucket per decision (messages seen on its subjects).
On a 2-core machine nats-server, the replicas and this client share the CPU.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from clipline.servers import (
    NatsServer,
    Proc,
    free_port,
    http_ok,
    spawn,
    start_secured_nats,
    stop_pid,
    wait_until,
)
from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.budgets import Limit
from services.pricing_guard.ports import Claim
from shared.contracts import JobAcceptedV1, JobRecordV1, JobSpec, JobStatus, record_key
from shared.kvatomic import AtomicKv
from shared.streams import BUDGETS_BUCKET, JOBS_BUCKET

SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="bench")
COST = 400_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(n: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    took = []
    for i in range(n):
        start = time.perf_counter()
        await one(i)
        took.append((time.perf_counter() - start) * 1000)
    return took


async def added_latency(nc: Client, n: int) -> None:
    js = nc.jetstream()
    kv = await js.key_value(BUDGETS_BUCKET)
    jobs_kv = await js.key_value(JOBS_BUCKET)

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    budgets = KvBudgets(AtomicKv(get_kv, lambda: nc, BUDGETS_BUCKET))
    tenant = f"lat{uuid.uuid4().hex[:6]}"
    await budgets.set_limit(f"tenant:{tenant}", "daily", Limit(10**15), datetime.now(UTC))

    async def reserve(i: int) -> object:
        claim = Claim(
            tenant, f"job_{uuid.uuid4().hex}", "sora-2", "1280x720", 4, COST, datetime.now(UTC)
        )
        return await budgets.reserve(claim)

    key = f"{tenant}.job_{uuid.uuid4().hex}"
    await jobs_kv.create(key, b"0")

    async def record_cas(i: int) -> object:
        entry = await jobs_kv.get(key)
        return await jobs_kv.update(key, str(i).encode(), last=entry.revision)

    await timed(50, reserve)  # warm up both paths
    await timed(50, record_cas)
    with_budget = await timed(n, reserve)
    baseline = await timed(n, record_cas)
    print(f"\nadded latency per admission ({n} sequential, one client)")
    print(f"  {'':36} {'p50 ms':>8} {'p99 ms':>8}")
    print(
        f"  {'job record CAS (before budgets)':36} {pct(baseline, 0.5):8.2f} "
        f"{pct(baseline, 0.99):8.2f}"
    )
    print(
        f"  {'budget reservation (atomic batch)':36} {pct(with_budget, 0.5):8.2f} "
        f"{pct(with_budget, 0.99):8.2f}"
    )
    print(
        f"  added by budgets: p50 {pct(with_budget, 0.5):.2f} ms, "
        f"p99 {pct(with_budget, 0.99):.2f} ms "
        f"({statistics.median(with_budget) / statistics.median(baseline):.1f}x one CAS)"
    )


def start_replicas(n: int, nats_url: str, logs: Path) -> list[Proc]:
    procs = []
    for i in range(n):
        port = free_port()
        env = {
            "CLIPLINE_NATS_URL": nats_url,
            "CLIPLINE_NATS_CREDS": str(logs / "auth" / "creds" / "pricing_guard.creds"),
            "CLIPLINE_HTTP_PORT": str(port),
            "CLIPLINE_LOG_LEVEL": "WARNING",
            "OTEL_SDK_DISABLED": "true",
        }
        proc = spawn(
            f"pricing_guard-{i + 1}",
            [sys.executable, "-m", "services.pricing_guard"],
            logs / f"pricing_guard-{i + 1}.log",
            env,
        )
        procs.append((proc, port))
    for proc, port in procs:
        wait_until(http_ok(f"http://127.0.0.1:{port}/healthz"), proc.name, 60, proc)
    return [p for p, _ in procs]


async def throughput(nc: Client, replicas: int, jobs: int, logs: Path) -> None:
    js = nc.jetstream()
    jobs_kv = await js.key_value(JOBS_BUCKET)
    tenant = f"r{replicas}{uuid.uuid4().hex[:6]}"
    fits = jobs // 2
    kv = await js.key_value(BUDGETS_BUCKET)

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    budgets = KvBudgets(AtomicKv(get_kv, lambda: nc, BUDGETS_BUCKET))
    await budgets.set_limit(f"tenant:{tenant}", "lifetime", Limit(fits * COST), datetime.now(UTC))
    now = datetime.now(UTC)
    ids = [f"job_{uuid.uuid4().hex}" for _ in range(jobs)]
    for chunk in range(0, jobs, 200):  # seed the records intake would have written
        await asyncio.gather(
            *(
                jobs_kv.create(
                    record_key(tenant, j),
                    JobRecordV1(
                        job_id=j,
                        tenant=tenant,
                        status=JobStatus.ACCEPTED,
                        spec=SPEC,
                        idempotency_key=j,
                        request_hash="0" * 64,
                        history={"accepted": now},
                    )
                    .model_dump_json()
                    .encode(),
                )
                for j in ids[chunk : chunk + 200]
            )
        )
    decided: dict[str, str] = {}
    done = asyncio.Event()

    async def on_decision(msg: Msg) -> None:
        decided[msg.subject.split(".")[-1]] = msg.subject.split(".")[2]
        if len(decided) >= jobs:
            done.set()

    sub_a = await nc.subscribe(
        JobAcceptedV1.subject_filter(tenant).replace("accepted", "admitted"), cb=on_decision
    )
    sub_r = await nc.subscribe(
        JobAcceptedV1.subject_filter(tenant).replace("accepted", "rejected"), cb=on_decision
    )
    ops = {"get": 0, "write": 0}

    def count(kind: str) -> Callable[[Msg], Awaitable[None]]:
        async def seen(_: Msg) -> None:
            ops[kind] += 1

        return seen

    counting = [
        await nc.subscribe(f"$JS.API.STREAM.MSG.GET.KV_{BUDGETS_BUCKET}", cb=count("get")),
        await nc.subscribe(f"$JS.API.DIRECT.GET.KV_{BUDGETS_BUCKET}.>", cb=count("get")),
        await nc.subscribe(f"$KV.{BUDGETS_BUCKET}.>", cb=count("write")),
    ]
    await nc.flush()
    procs = start_replicas(replicas, nc.connected_url.geturl() if nc.connected_url else "", logs)
    try:
        start = time.perf_counter()
        for chunk in range(0, jobs, 250):
            await asyncio.gather(
                *(
                    js.publish(
                        e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": e.event_id}
                    )
                    for e in (
                        JobAcceptedV1.fact(_Ref(j, tenant), spec=SPEC, idempotency_key=j)
                        for j in ids[chunk : chunk + 250]
                    )
                )
            )
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            stop_pid(proc.pid)
        await sub_a.unsubscribe()
        await sub_r.unsubscribe()
        for sub in counting:
            await sub.unsubscribe()
    admitted = sum(1 for kind in decided.values() if kind == "admitted")
    print(
        f"  {replicas} replica{'s' if replicas > 1 else ' '}  {jobs:6d} jobs  {elapsed:7.2f} s  "
        f"{jobs / elapsed:8.1f} decisions/s  admitted {admitted} of {fits} that fit  "
        f"overshoot {admitted - fits}"
    )
    print(
        f"      budgets bucket per decision: {ops['get'] / jobs:.1f} GETs, "
        f"{ops['write'] / jobs:.1f} writes (messages seen on its subjects)"
    )
    if admitted != fits:
        raise SystemExit(f"budget overshot or underused: admitted {admitted}, fits {fits}")


class _Ref:
    def __init__(self, job_id: str, tenant: str) -> None:
        self.job_id, self.tenant = job_id, tenant


async def main(jobs: int, server: NatsServer, root: Path) -> None:
    nc = await nats.connect(server.url, user_credentials=server.creds)
    try:
        await added_latency(nc, min(jobs, 1000))
        print(
            f"\nadmission throughput under contention (budget fits {jobs // 2} of {jobs}; "
            f"{os.cpu_count()} cores shared)"
        )
        for replicas in (1, 2):
            await throughput(nc, replicas, jobs, root)
    finally:
        await nc.close()


if __name__ == "__main__":
    bench_root = Path(tempfile.mkdtemp(prefix="clipline-bench-admission-"))
    nats_server, _ = start_secured_nats(bench_root)  # identities under <root>/auth
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, nats_server, bench_root))
    finally:
        stop_pid(nats_server.proc.pid)

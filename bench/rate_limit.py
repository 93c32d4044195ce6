"""P3, rate-limit utilisation: a backlog of admitted jobs against a simulator that allows
`rpm` creates a minute, shaped by 2 submitter replicas for 3 minutes. Prints the creates per
minute as a share of the RPM (goal >= 98% once the first minute's burst is spent) and the
upstream's 429s (goal 0), from the simulator's own accounting.

Run: python -m bench.rate_limit [rpm] [minutes]   (make bench runs it; default 600 RPM, 3 min)

The simulator's bucket, like OpenAI's, starts full: a minute's worth goes at once, then the
refill rate. So the backlog is sized to last the whole run: a minute's burst plus `minutes` of
refill (2400 jobs at 600 RPM for 3 minutes), more than the issue's 1000, which the burst and
40 s would use up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats

from clipline.servers import (
    Proc,
    free_port,
    http_ok,
    spawn,
    start_secured_nats,
    stop_pid,
    wait_until,
)
from shared.contracts import JobAdmittedV1, JobRecordV1, JobSpec, JobStatus, record_key
from shared.streams import JOBS_BUCKET

API_KEY = "sk-bench"
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="bench")


def python(name: str, module: str, env: dict[str, str], logs: Path) -> Proc:
    return spawn(name, [sys.executable, "-m", module], logs / f"{name}.log", env)


async def seed(url: str, creds: str, jobs: int, tenant: str) -> None:
    """What intake and pricing_guard leave behind: admitted records and their events."""
    nc = await nats.connect(url, user_credentials=creds)
    js = nc.jetstream()
    kv = await js.key_value(JOBS_BUCKET)
    now = datetime.now(UTC)
    ids = [f"job_{uuid.uuid4().hex}" for _ in range(jobs)]
    for start in range(0, jobs, 200):
        chunk = ids[start : start + 200]
        await asyncio.gather(*(
            kv.create(record_key(tenant, j), JobRecordV1(
                job_id=j, tenant=tenant, status=JobStatus.ADMITTED, spec=SPEC,
                idempotency_key=j, request_hash="0" * 64, cost_micros=400_000,
                history={"accepted": now, "admitted": now},
            ).model_dump_json().encode())
            for j in chunk
        ))  # fmt: skip
        events = [
            JobAdmittedV1.fact(_Job(j, tenant), spec=SPEC, cost_micros=400_000) for j in chunk
        ]
        await asyncio.gather(*(
            js.publish(e.subject, e.model_dump_json().encode(), headers={"Nats-Msg-Id": e.event_id})
            for e in events
        ))  # fmt: skip
    await nc.close()


class _Job:
    def __init__(self, job_id: str, tenant: str) -> None:
        self.job_id, self.tenant = job_id, tenant


def main(rpm: int, minutes: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="clipline-bench-rate-"))
    server, auth = start_secured_nats(root)
    procs: list[Proc] = []
    try:
        sim_port = free_port()
        sim_env = {
            "CLIPLINE_SIM_HOST": "127.0.0.1", "CLIPLINE_SIM_PORT": str(sim_port),
            "CLIPLINE_SIM_API_KEY": API_KEY, "CLIPLINE_SIM_RPM": json.dumps({"sora-2": rpm}),
            "CLIPLINE_SIM_GENERATION_SECONDS": "600", "CLIPLINE_SIM_SMALL_ASSETS": "true",
            "CLIPLINE_SIM_ASSET_DIR": str(root / "assets"), "CLIPLINE_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        procs.append(python("simulator", "services.simulator", sim_env, root))
        sim = f"http://127.0.0.1:{sim_port}"
        wait_until(http_ok(f"{sim}/healthz"), "simulator", 60, procs[-1])
        ports = [free_port() for _ in range(2)]
        for n, port in enumerate(ports, start=1):
            env = {
                "CLIPLINE_NATS_URL": server.url, "CLIPLINE_HTTP_PORT": str(port),
                "CLIPLINE_NATS_CREDS": str(auth.creds_file("submitter")),
                "CLIPLINE_UPSTREAM_BASE_URL": f"{sim}/v1", "CLIPLINE_UPSTREAM_API_KEY": API_KEY,
                "CLIPLINE_RATE_RPM": str(rpm), "CLIPLINE_LOG_LEVEL": "WARNING",
                "OTEL_SDK_DISABLED": "true",
            }  # fmt: skip
            procs.append(python(f"submitter-{n}", "services.submitter", env, root))
        for proc, port in zip(procs[1:], ports, strict=True):
            wait_until(http_ok(f"http://127.0.0.1:{port}/healthz"), proc.name, 60, proc)
        jobs = rpm + int(rpm * minutes)
        asyncio.run(seed(server.url, str(server.creds), jobs, "bench"))
        started = time.time()
        with httpx.Client(base_url=sim, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
            deadline = started + minutes * 60 + 90
            while time.time() < deadline:
                made = len(http.get("/control/creates").json())
                if made >= jobs:
                    break
                time.sleep(5)  # a progress check of a long run, not synchronisation
            creates = http.get("/control/creates").json()
            attempts = http.get("/control/attempts").json()
        report(creates, attempts, rpm, minutes, jobs)
    finally:
        for proc in procs:
            stop_pid(proc.pid)
        stop_pid(server.proc.pid)


def report(creates: list[dict], attempts: list[dict], rpm: int, minutes: float, jobs: int) -> None:  # type: ignore[type-arg]
    first = min(c["created_at"] for c in creates)
    per_minute = Counter(int((c["created_at"] - first) // 60) for c in creates)
    refused = sum(1 for a in attempts if a.get("status") == 429)
    per_job = Counter(c.get("client_request_id") for c in creates)
    print(f"\nP3 rate-limit utilisation: {jobs} admitted jobs, simulator {rpm} RPM, 2 submitters")
    print(f"  {'minute':>6} {'creates':>8} {'share of RPM':>13}")
    for minute in range(int(minutes) + 1):
        n = per_minute.get(minute, 0)
        print(f"  {minute + 1:>6} {n:>8} {n / rpm:>12.1%}")
    steady = [per_minute.get(m, 0) for m in range(1, int(minutes))]
    share = sum(steady) / (len(steady) * rpm) if steady else 0.0
    print(f"  steady (minutes 2..{int(minutes)}): {share:.1%} of RPM (goal >= 98%); "
          f"upstream 429s: {refused} (goal 0); creates {len(creates)} for {jobs} jobs, "
          f"most for one job: {max(per_job.values())}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 600,
         float(sys.argv[2]) if len(sys.argv) > 2 else 3.0)  # fmt: skip

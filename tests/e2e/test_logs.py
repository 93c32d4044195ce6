"""Service logs on the embedded stack: JSON lines with trace, span and job ids; one line per
lifecycle step; and no ERROR while idle (a minute of it, read from every service's log)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from clipline.stack import StackOptions, StackState, down, up
from shared.contracts.ids import job_id_for
from tests.e2e.harness import as_tenant

pytestmark = pytest.mark.e2e
SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
IDLE_SECONDS = 20.0
"""Four expiries of every standing pull request (shared/pullfetch.py REQUEST_SECONDS): the idle
path that once logged an ERROR per expiry (an empty fetch's TimeoutError)."""


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    saved = os.environ.get("CLIPLINE_LOG_FORMAT")
    os.environ["CLIPLINE_LOG_FORMAT"] = "json"
    home = tmp_path_factory.mktemp("logstack")
    try:
        yield up(home, StackOptions(generation_seconds=1.0, poll_after_ms=200))
    finally:
        survivors = down(home)
        if saved is None:
            os.environ.pop("CLIPLINE_LOG_FORMAT", None)
        else:
            os.environ["CLIPLINE_LOG_FORMAT"] = saved
        assert not survivors, survivors


def log_of(state: StackState, name: str) -> Path:
    return Path(next(p.log for p in state.processes if p.name == name))


def json_lines(path: Path) -> list[dict[str, object]]:
    """Every JSON log line of a service (its raw stdout may hold other lines: skipped)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def run_one_job(state: StackState) -> str:
    tenant, key = "logs", f"logs-{uuid.uuid4().hex}"
    job_id = job_id_for(tenant, key)
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_end(msg: Msg) -> None:
        if not done.done():
            done.set_result(msg.subject.split(".")[2])

    try:
        for kind in ("completed", "failed", "rejected", "timed_out"):
            await nc.subscribe(f"clipline.job.{kind}.v1.{tenant}.{job_id}", cb=on_end)
        async with httpx.AsyncClient(base_url=state.intake_url, timeout=30) as http:
            body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "log me"}
            headers = {"Idempotency-Key": key, **as_tenant(state, tenant)}
            assert (await http.post("/v1/jobs", json=body, headers=headers)).status_code == 202
        assert await asyncio.wait_for(done, 90) == "completed"
    finally:
        await nc.close()
    return job_id


async def test_lifecycle_lines_are_json_with_trace_span_and_job(json_stack: StackState) -> None:
    job_id = await run_one_job(json_stack)
    steps = {
        "intake": "accepted",
        "pricing_guard": "admitted",
        "submitter": "submitted",
        "poller": "generated",
        "storage": "completed",
    }
    trace_ids = set()
    for service, kind in steps.items():
        deadline = time.monotonic() + 10  # a log line is flushed as it is written; bounded
        while True:
            lines = [
                line
                for line in json_lines(log_of(json_stack, service))
                if line.get("job_id") == job_id and str(line["message"]).endswith(kind)
            ]
            if lines or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert len(lines) == 1, (service, kind, lines)
        line = lines[0]
        assert line["level"] == "INFO"
        assert len(str(line["trace_id"])) == 32
        assert len(str(line["span_id"])) == 16
        trace_ids.add(line["trace_id"])
    assert len(trace_ids) == 1  # one job, one trace, in the logs too
    for service in SERVICES:  # per message or per request lines are not INFO
        info = [x for x in json_lines(log_of(json_stack, service)) if x.get("level") == "INFO"]
        per_job = [x for x in info if x.get("job_id") == job_id]
        assert len(per_job) <= 2, (service, per_job)


async def test_idle_logs_have_no_error(json_stack: StackState) -> None:
    """Every log of the services and the simulator, their raw output files included."""
    files = [f for name in (*SERVICES, "simulator") for f in json_stack.find(name).log_files()]
    sizes = {f: f.stat().st_size if f.exists() else 0 for f in files}
    # Observing a quiet stack for a fixed time is the point of this test, not synchronisation.
    await asyncio.sleep(IDLE_SECONDS)
    for path in files:
        if not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(sizes[path])
            idle = f.read().decode(errors="replace")
        assert "ERROR" not in idle, f"{path.name} while idle:\n{idle[-3000:]}"
        assert "Traceback" not in idle, path.name
        whole = path.read_text(errors="replace")
        assert "ERROR" not in whole, f"{path.name}:\n{whole[-3000:]}"
        assert "Traceback" not in whole, path.name

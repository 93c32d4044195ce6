"""submitter against a real nats-server and the simulator dropping every create response after
accepting it: each job is reconciled to the video its lost create made, one create per job
(the simulator's accounting is the proof)."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider

from clipline.auth import AuthDir
from clipline.servers import LOOPBACK, Proc, free_port, http_ok, spawn, stop_pid, wait_until
from services.submitter.app import build_router
from services.submitter.ports import Deps
from shared.contracts import JobAdmittedV1, JobRecordV1, JobSpec, JobStatus
from shared.provider import CreateVideo, OpenAIVideosProvider, ProviderNoAnswer, ProviderNotSent
from shared.runtime import Platform, make_platform, wire
from tests.conftest import repo_root, seed_record

pytestmark = pytest.mark.integration
API_KEY = "sk-reconcile-test"
JOBS = 6


@pytest.fixture(scope="module")
def dropping_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The simulator, every create accepted and accounted, then its response cut."""
    port = free_port()
    env = {
        "CLIPLINE_SIM_HOST": LOOPBACK,
        "CLIPLINE_SIM_PORT": str(port),
        "CLIPLINE_SIM_API_KEY": API_KEY,
        "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_SIM_FAULTS": json.dumps({"drop_after_create_rate": 1.0}),
    }
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    proc: Proc = spawn(
        "simulator", [sys.executable, "-m", "services.simulator"], log, env, repo_root()
    )
    try:
        wait_until(http_ok(f"http://{LOOPBACK}:{port}/healthz"), "simulator", 60, proc)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        stop_pid(proc.pid)


@pytest.fixture
async def submitter(
    provisioned: str, dropping_simulator: str, nats_auth: AuthDir
) -> AsyncIterator[Platform]:
    creds = nats_auth.creds_file("submitter")  # the submitter's own identity
    platform = make_platform("submitter", provisioned, TracerProvider(), creds)
    async with OpenAIVideosProvider.client(f"{dropping_simulator}/v1", API_KEY) as http:
        router = build_router(max_attempts=10)
        deps = Deps(
            platform.jobs, platform.inputs, platform.upstream, OpenAIVideosProvider(http),
            router.emit, 3600.0,
        )  # fmt: skip
        wire(platform.broker, router, deps, platform.jobs)
        await platform.broker.start()
        try:
            yield platform
        finally:
            await platform.broker.stop()


async def wait_submitted(platform: Platform, tenant: str, job_id: str) -> JobRecordV1:
    record = None
    for _ in range(400):  # bounded: retries back off 0.5 s, 1 s, ...
        record = await platform.jobs.get(tenant, job_id)
        if record is not None and record.status == JobStatus.SUBMITTED:
            return record
        if record is not None and record.terminal:
            raise AssertionError(f"{job_id} ended: {record.reason}: {record.detail}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} never submitted: {record}")


async def test_dropped_create_responses_are_adopted_not_created_again(
    submitter: Platform, dropping_simulator: str, nc: Client
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    events = []
    for i in range(JOBS):
        job_id = f"job_{uuid.uuid4().hex}"
        spec = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt=f"boat {uuid.uuid4()}")
        record = JobRecordV1(
            job_id=job_id, tenant=tenant, status=JobStatus.ADMITTED, spec=spec,
            idempotency_key=f"k{i}", request_hash="h", cost_micros=400_000,
            history={"accepted": datetime.now(UTC), "admitted": datetime.now(UTC)},
        )  # fmt: skip
        await seed_record(nc, record)
        events.append(
            JobAdmittedV1(
                event_id=f"evt_{uuid.uuid4().hex}",
                occurred_at=datetime.now(UTC),
                job_id=job_id,
                tenant=tenant,
                spec=spec,
                cost_micros=400_000,
            )
        )
    # The same prompt twice would be ambiguous by design; each job here has its own.
    for event in events:  # as pricing_guard would (the admin identity may; the submitter's not)
        await nc.jetstream().publish(
            event.subject, event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": event.event_id}, stream="CLIPLINE_JOBS",
        )  # fmt: skip
    records = [await wait_submitted(submitter, tenant, e.job_id) for e in events]
    async with httpx.AsyncClient(base_url=dropping_simulator) as http:
        creates = (await http.get("/control/creates")).json()
    by_job: dict[str, list[dict[str, object]]] = {}
    for create in creates:
        by_job.setdefault(str(create["client_request_id"]), []).append(create)
    counts = {e.job_id: len(by_job.get(e.job_id, [])) for e in events}
    print(f"creates per job with every create response dropped: {sorted(counts.values())}")
    for event, record in zip(events, records, strict=True):
        (create,) = by_job[event.job_id]  # exactly one upstream create per job
        assert create["dropped"] is True
        assert record.upstream_id == create["video_id"]
        assert record.submit_attempts == 1  # adopted on the redelivery, never posted again
        assert await submitter.upstream.owner(str(create["video_id"])) == (tenant, event.job_id)


async def test_a_real_dropped_create_is_a_lost_answer_and_a_closed_port_is_not_sent(
    dropping_simulator: str,
) -> None:
    """The adapter's classification against real sockets: the simulator accepts the create and
    cuts the response (sent, answer lost); nothing listens on a freed port (never sent)."""
    client_id = f"job_{uuid.uuid4().hex}"
    request = CreateVideo("sora-2", "1280x720", 4, f"kite {uuid.uuid4()}", client_id)
    async with OpenAIVideosProvider.client(f"{dropping_simulator}/v1", API_KEY) as http:
        with pytest.raises(ProviderNoAnswer):
            await OpenAIVideosProvider(http).create(request)
        creates = (await http.get(f"{dropping_simulator}/control/creates")).json()
    assert [c["dropped"] for c in creates if c["client_request_id"] == client_id] == [True]
    async with OpenAIVideosProvider.client(f"http://{LOOPBACK}:{free_port()}/v1", API_KEY) as http:
        with pytest.raises(ProviderNotSent):
            await OpenAIVideosProvider(http).create(request)

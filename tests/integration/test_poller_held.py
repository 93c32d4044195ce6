"""The poller on a real nats-server, through the house consume loop, as its own identity: a
job's `submitted` waits in a delayed nak, a webhook moves the job on, and the delivery it left
pending is acked then (nothing left pending on the poller's durable, nothing redelivered)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError
from opentelemetry.sdk.trace import TracerProvider
from standardwebhooks import Webhook

from clipline.auth import AuthDir
from services.poller.adapters import NatsTimerAcks
from services.poller.app import build_app
from services.poller.domain import PollPolicy, with_webhooks
from services.poller.held import HeldTimers
from services.poller.webhooks import PATH
from shared.contracts import JobRecordV1, JobSpec, JobStatus, JobSubmittedV1
from shared.runtime import Dispatch, Platform, make_platform
from shared.streams import JOBS_STREAM_NAME, UPSTREAM_BUCKET
from tests.conftest import seed_record
from tests.fakes import FakeProvider, FixedExpectations, upstream_video
from tests.webhook_signing import SECRET, event_body, signed

pytestmark = pytest.mark.integration
DURABLE = JobSubmittedV1.durable("poller")
POLICY = with_webhooks(
    PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3 * 3600.0), 60.0
)
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="a paper boat")
WAIT_SECONDS = 10.0


@dataclass
class Poller:
    platform: Platform
    app: Dispatch
    held: HeldTimers
    provider: FakeProvider


@pytest.fixture
async def poller(nc: Client, provisioned: str, nats_auth: AuthDir) -> AsyncIterator[Poller]:
    """The poller's consumer from a clean start: no earlier test's `submitted` left on it."""
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(JOBS_STREAM_NAME, DURABLE)
    await js.purge_stream(JOBS_STREAM_NAME, subject="clipline.job.submitted.>")
    platform = make_platform(
        "poller", provisioned, TracerProvider(), nats_auth.creds_file("poller")
    )
    broker = platform.broker
    held = HeldTimers(NatsTimerAcks(lambda: broker.connection))
    provider = FakeProvider()
    app = build_app(
        platform, provider, POLICY, Webhook(SECRET),
        expectations=FixedExpectations(600.0), held=held,
    )  # fmt: skip
    await broker.start()
    try:
        yield Poller(platform, app, held, provider)
    finally:
        await broker.stop()


async def ack_pending(nc: Client) -> tuple[int, int, int]:
    """The poller durable's (delivered, ack pending, redelivered) counts."""
    info = await nc.jetstream().consumer_info(JOBS_STREAM_NAME, DURABLE)
    return info.delivered.consumer_seq or 0, info.num_ack_pending or 0, info.num_redelivered or 0


async def until(check: object, what: str) -> None:
    """Wait (bounded) until `check()` is true."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)  # polling a server counter, with a deadline


async def test_a_job_moved_on_by_a_webhook_leaves_nothing_pending(
    poller: Poller, nc: Client
) -> None:
    tenant, job_id, video = f"t{uuid.uuid4().hex[:8]}", f"job_{uuid.uuid4().hex}", "video_held1"
    at = datetime.now(UTC) - timedelta(seconds=2)
    record = JobRecordV1(
        job_id=job_id, tenant=tenant, status=JobStatus.SUBMITTED, spec=SPEC,
        idempotency_key="k", request_hash="h", cost_micros=400_000, upstream_id=video,
        history={"accepted": at, "admitted": at, "submitted": at},
    )  # fmt: skip
    await seed_record(nc, record)
    upstream = await nc.jetstream().key_value(UPSTREAM_BUCKET)
    await upstream.put(video, record.key.encode())  # as the submitter links it
    event = JobSubmittedV1.fact(record, spec=SPEC, upstream_id=video, cost_micros=400_000)
    await nc.jetstream().publish(
        event.subject, event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": event.event_id}, stream=JOBS_STREAM_NAME,
    )  # fmt: skip

    async def held() -> bool:
        return len(poller.held) == 1

    await until(held, "the submitted delivery held in its delayed nak")
    assert await ack_pending(nc) == (1, 1, 0)  # its timer: ~11 minutes away
    poller.provider.retrieves.append((upstream_video(video, "completed", progress=100), None))

    body = event_body(video)
    transport = httpx.ASGITransport(app=poller.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
        response = await client.post(PATH, content=body, headers=signed(body))

    assert response.json() == {"accepted": "looked", "job_id": job_id, "running": False}
    done = await poller.platform.jobs.get(tenant, job_id)
    assert done is not None
    assert done.status == JobStatus.GENERATED

    async def acked() -> bool:
        return (await ack_pending(nc))[1] == 0

    await until(acked, "the held delivery acked")
    assert await ack_pending(nc) == (1, 0, 0)  # one delivery, none pending, none redelivered
    assert len(poller.held) == 0

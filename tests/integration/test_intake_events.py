"""GET /v1/jobs/{id}/events against a real nats-server, with intake's own NATS identity: the
job's stored events replayed, then a live one, then the end after the terminal event;
Last-Event-ID resumes after that sequence; heartbeats while idle; another tenant's job or an
unknown one is a 404 problem. Intake runs under uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider

from clipline.auth import AuthDir
from clipline.servers import LOOPBACK, free_port
from services.intake.adapters import NatsJobEvents, probe_image
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.contracts import Event, JobRecordV1, JobStatus
from shared.contracts.events import JobAcceptedV1, JobAdmittedV1
from shared.registry import load_registry
from shared.runtime import make_platform
from tests.component.harness import job_record, new_job_id
from tests.conftest import seed_record
from tests.fakes import InMemoryApiKeys, bearer

pytestmark = pytest.mark.integration
DEADLINE = 15.0
HEARTBEAT = 0.3


@dataclass
class Sse:
    """One parsed SSE message (`comment` for a comment line)."""

    id: int | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    comment: str | None = None


@dataclass
class Intake:
    http: httpx.AsyncClient
    tenants: tuple[str, str]


@pytest.fixture
async def intake(provisioned: str, nats_auth: AuthDir) -> AsyncIterator[Intake]:
    tenants = (f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}")
    platform = make_platform(
        "intake", provisioned, TracerProvider(), nats_auth.creds_file("intake")
    )
    await platform.broker.start()
    broker = platform.broker

    async def emit(event: Event) -> None:
        raise AssertionError(f"nothing is emitted here: {event}")

    deps = Deps(
        platform.jobs, platform.inputs, emit, load_registry().provider("simulator"),
        probe_image, InMemoryApiKeys(tenants), events=NatsJobEvents(lambda: broker.connection),
    )  # fmt: skip
    port = free_port()
    config = uvicorn.Config(
        build_http(deps, heartbeat_seconds=HEARTBEAT), host=LOOPBACK, port=port,
        log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", timeout=30) as http:
            async with asyncio.timeout(DEADLINE):
                while not server.started:  # until uvicorn listens
                    assert not serving.done()
                    await asyncio.sleep(0.02)
            yield Intake(http, tenants)
    finally:
        server.should_exit = True
        await serving
        await platform.broker.stop()


async def messages(response: httpx.Response) -> AsyncIterator[Sse]:
    """The SSE messages and comments of a streamed response, as they arrive."""
    current = Sse()
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield Sse(comment=line[1:].strip())
        elif not line:
            if current.event is not None:
                yield current
            current = Sse()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                current.id = int(value)
            elif name == "event":
                current.event = value
            elif name == "data":
                current.data.append(value)


@asynccontextmanager
async def follow(
    intake: Intake, tenant: str, job_id: str, **headers: str
) -> AsyncIterator[AsyncIterator[Sse]]:
    async with intake.http.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={**bearer(tenant), **headers}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield messages(response)


async def record(nc: Client, tenant: str, status: JobStatus) -> JobRecordV1:
    made = job_record(new_job_id(), status).model_copy(update={"tenant": tenant})
    await seed_record(nc, made)
    return made


async def publish(nc: Client, kind: str, job: JobRecordV1, **fields: Any) -> int:
    """Store an event of `job` (its JSON as a service would send it); its stream sequence."""
    body = {"event_id": uuid.uuid4().hex, "job_id": job.job_id, "tenant": job.tenant, **fields}
    subject = f"clipline.job.{kind}.v1.{job.tenant}.{job.job_id}"
    ack = await nc.jetstream().publish(subject, json.dumps(body).encode())
    return ack.seq


async def next_event(stream: AsyncIterator[Sse]) -> Sse:
    """The next message that is not a comment."""
    async for sse in stream:
        if sse.comment is None:
            return sse
    raise AssertionError("the stream ended")


async def rest(stream: AsyncIterator[Sse]) -> list[Sse]:
    return [sse async for sse in stream]


async def test_replay_then_live_then_the_end(intake: Intake, nc: Client) -> None:
    tenant = intake.tenants[0]
    job = await record(nc, tenant, JobStatus.GENERATING)
    neighbour = await record(nc, tenant, JobStatus.GENERATING)
    past = [await publish(nc, kind, job) for kind in ("accepted", "admitted", "submitted")]
    await publish(nc, "accepted", neighbour)  # another job: never in this stream
    await publish(nc, "budget_alert", job, scope="global")  # not a tenant's to see

    async with asyncio.timeout(DEADLINE), follow(intake, tenant, job.job_id) as stream:
        replayed = [await next_event(stream) for _ in past]
        live = await publish(nc, "progress", job, progress=40)
        progress = await next_event(stream)
        end = await publish(nc, "completed", job, cost_micros=1)
        completed = await next_event(stream)
        after = await rest(stream)  # the stream ends by itself

    assert [(m.id, m.event) for m in replayed] == list(
        zip(past, ["accepted", "admitted", "submitted"], strict=True)
    )
    assert all(json.loads("".join(m.data))["job_id"] == job.job_id for m in replayed)
    assert (progress.id, progress.event) == (live, "progress")
    assert json.loads("".join(progress.data))["progress"] == 40
    assert (completed.id, completed.event) == (end, "completed")
    assert [m.event for m in after if m.comment is None] == []


async def test_last_event_id_resumes_after_that_sequence(intake: Intake, nc: Client) -> None:
    tenant = intake.tenants[0]
    job = await record(nc, tenant, JobStatus.FAILED)
    seqs = [await publish(nc, k, job) for k in ("accepted", "admitted", "submitted", "failed")]

    async with asyncio.timeout(DEADLINE):
        async with follow(intake, tenant, job.job_id, **{"Last-Event-ID": str(seqs[1])}) as s:
            resumed = [m for m in await rest(s) if m.comment is None]
        bad = await intake.http.get(
            f"/v1/jobs/{job.job_id}/events", headers={**bearer(tenant), "Last-Event-ID": "x1"}
        )

    assert [(m.id, m.event) for m in resumed] == [(seqs[2], "submitted"), (seqs[3], "failed")]
    assert (bad.status_code, bad.json()["field"]) == (422, "Last-Event-ID")


async def test_heartbeats_while_idle_and_the_end_when_the_record_ended(
    intake: Intake, nc: Client
) -> None:
    """A job whose terminal event the stream no longer holds still ends its stream: when idle,
    the record is read."""
    tenant = intake.tenants[0]
    job = await record(nc, tenant, JobStatus.GENERATING)

    async with asyncio.timeout(DEADLINE), follow(intake, tenant, job.job_id) as stream:
        first = await anext(stream)
        await seed_record(nc, job.model_copy(update={"status": JobStatus.COMPLETED}))
        after = await rest(stream)

    assert first.comment == "heartbeat"
    assert after  # it ended, with a comment saying why
    assert all(m.comment is not None for m in after)


async def test_another_tenants_job_or_an_unknown_one_is_a_404(intake: Intake, nc: Client) -> None:
    mine, theirs = intake.tenants
    job = await record(nc, theirs, JobStatus.GENERATING)
    await publish(nc, "accepted", job)

    for tenant, job_id in ((mine, job.job_id), (theirs, new_job_id()), (mine, "nope")):
        r = await intake.http.get(f"/v1/jobs/{job_id}/events", headers=bearer(tenant))
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["reason"] == "not_found"


async def test_the_timeline_reads_the_stored_events_with_intakes_own_identity(
    intake: Intake, nc: Client
) -> None:
    """GET /v1/jobs/{id}/timeline reads the same way (message by message, no consumer): each
    event's trace from its `traceparent` header, an unreadable one at the stream's time."""
    tenant = intake.tenants[0]
    job = await record(nc, tenant, JobStatus.ADMITTED)
    trace = uuid.uuid4().hex
    accepted = JobAcceptedV1.fact(job, spec=job.spec, idempotency_key="k")
    admitted = JobAdmittedV1.fact(job, spec=job.spec, cost_micros=400_000)
    js = nc.jetstream()
    for event in (accepted, admitted):
        headers = {"traceparent": f"00-{trace}-{'cd' * 8}-01"}
        await js.publish(event.subject, event.model_dump_json().encode(), headers=headers)
    garbled = await publish(nc, "progress", job)  # no occurred_at: not a readable event

    async with asyncio.timeout(DEADLINE):
        r = await intake.http.get(f"/v1/jobs/{job.job_id}/timeline", headers=bearer(tenant))

    assert r.status_code == 200, r.text
    steps = r.json()["steps"]
    events = [s for s in steps if s["source"] == "event"]
    assert [(s["step"], s["service"], s["trace_id"]) for s in events[:2]] == [
        ("accepted", "intake", trace), ("admitted", "pricing_guard", trace)
    ]  # fmt: skip
    assert events[1]["cost_micros"] == 400_000
    assert (events[2]["step"], events[2]["seq"]) == ("progress", garbled)
    assert "could not be read" in events[2]["detail"]
    assert r.json()["events_read"] == 3

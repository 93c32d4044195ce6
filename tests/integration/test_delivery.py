"""House delivery policy on a real nats-server: delayed retries, exhaustion, poison, dedup."""

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faststream.exceptions import NackMessage
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider

from shared.contracts import JobAdmittedV1, JobRecordV1, JobSpec, JobStatus
from shared.messaging import ServiceRouter
from shared.messaging import event_decoder as decoder
from shared.runtime import Platform, make_platform, wire
from shared.streams import JOBS_STREAM_NAME
from tests.conftest import seed_record

pytestmark = pytest.mark.integration


def record_for(event: JobAdmittedV1) -> JobRecordV1:
    return JobRecordV1(
        job_id=event.job_id, tenant=event.tenant, status=JobStatus.ADMITTED, spec=event.spec,
        idempotency_key="k", request_hash="h", cost_micros=event.cost_micros,
    )  # fmt: skip


def admitted(tenant: str) -> JobAdmittedV1:
    return JobAdmittedV1(
        event_id=f"evt_{uuid.uuid4().hex}", occurred_at=datetime.now(UTC),
        job_id=f"job_{uuid.uuid4().hex}", tenant=tenant, cost_micros=1,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
    )  # fmt: skip


async def collect(nc: Client, subject: str) -> asyncio.Queue[dict[str, Any]]:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def cb(msg: Any) -> None:
        q.put_nowait(json.loads(msg.data))

    await nc.subscribe(subject, cb=cb)
    return q


class Svc:
    """A test service on a real broker: its router, wired as a service's app wires it."""

    def __init__(self, nats_url: str, creds: str) -> None:
        self.platform: Platform = make_platform("testsvc", nats_url, TracerProvider(), Path(creds))
        self.router = ServiceRouter("testsvc", emits=[JobAdmittedV1])
        self.broker = self.platform.broker
        self.jobs = self.platform.jobs

    async def start(self) -> None:
        wire(self.broker, self.router, None, self.jobs)
        await self.broker.start()

    async def emit(self, event: JobAdmittedV1) -> None:
        await self.router.emit(event)


@pytest.fixture
async def runtime(provisioned: str, admin_creds: str) -> AsyncIterator[Svc]:
    svc = Svc(provisioned, admin_creds)
    yield svc
    await svc.broker.stop()


async def test_failure_is_retried_later_not_at_once(runtime: Svc, nc: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    seen: list[float] = []
    done = asyncio.Event()
    router = runtime.router

    @router.on_subject(JobAdmittedV1.subject_filter(tenant), f"test--{tenant}", max_errors=5)
    async def handler(event: JobAdmittedV1) -> None:
        seen.append(time.monotonic())
        if len(seen) < 3:
            raise RuntimeError("transient")
        done.set()

    await runtime.start()
    await runtime.emit(admitted(tenant))
    await asyncio.wait_for(done.wait(), 20)
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(seen) == 3
    # retry_delay(1) = 0.5 s, retry_delay(2) = 1 s: delayed naks, not a hot loop
    assert gaps[0] >= 0.4
    assert gaps[1] >= 0.9


async def test_exhausted_retries_fail_the_job_visibly(runtime: Svc, nc: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    failed = await collect(nc, f"clipline.job.failed.v1.{tenant}.*")
    router = runtime.router
    calls: list[int] = []

    @router.on_subject(JobAdmittedV1.subject_filter(tenant), f"test--{tenant}", max_errors=2)
    async def handler(event: JobAdmittedV1) -> None:
        calls.append(1)
        raise RuntimeError("always broken")

    await runtime.start()
    event = admitted(tenant)
    await runtime.emit(event)
    got = await asyncio.wait_for(failed.get(), 20)
    assert got["job_id"] == event.job_id
    assert got["reason"] == "retries_exhausted"
    assert "always broken" in got["detail"]
    assert len(calls) == 2


async def test_error_budget_is_kept_on_the_record_and_the_record_ends_failed(
    runtime: Svc, nc: Client
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    failed = await collect(nc, f"clipline.job.failed.v1.{tenant}.*")
    router = runtime.router
    waits: list[int] = []

    @router.on_subject(JobAdmittedV1.subject_filter(tenant), f"test--{tenant}", max_errors=2)
    async def handler(event: JobAdmittedV1) -> None:
        if len(waits) < 3:
            waits.append(1)  # e.g. a 429: waiting is not an error and spends no budget
            raise NackMessage(delay=0.05)
        raise RuntimeError("upstream 503")

    event = admitted(tenant)
    await runtime.start()
    await seed_record(nc, record_for(event))
    await runtime.emit(event)
    got = await asyncio.wait_for(failed.get(), 20)
    assert got["reason"] == "retries_exhausted"
    record = await runtime.jobs.get(event.tenant, event.job_id)
    assert record is not None
    assert record.status == JobStatus.FAILED
    assert record.reason == "retries_exhausted"
    assert record.errors == {"testsvc": 2}
    assert len(waits) == 3


POISON = {
    "wrong_types": (b'{"cost_micros": "lots", "spec": 7}', "spec"),
    "garbage": (b"\xff\xfe\x00 not json {", "JSON"),
    "nesting_bomb": (b"[" * 200_000 + b"]" * 200_000, "JobAdmittedV1"),
}


@pytest.mark.parametrize("case", sorted(POISON))
async def test_poison_message_fails_job_once_and_is_never_redelivered(
    runtime: Svc, nc: Client, case: str
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = f"test--{tenant}"
    failed = await collect(nc, f"clipline.job.failed.v1.{tenant}.*")
    router = runtime.router

    @router.on_subject(
        JobAdmittedV1.subject_filter(tenant), durable, decoder=decoder(JobAdmittedV1)
    )
    async def handler(event: JobAdmittedV1) -> None:
        raise AssertionError("a poison message must not reach the handler")

    await runtime.start()
    js = nc.jetstream()
    job_id = f"job_{uuid.uuid4().hex}"
    payload, mentioned = POISON[case]
    await js.publish(f"clipline.job.admitted.v1.{tenant}.{job_id}", payload)
    got = await asyncio.wait_for(failed.get(), 20)
    assert got["job_id"] == job_id
    assert got["tenant"] == tenant  # from the subject: the body could not say
    assert got["reason"] == "poison_message"
    assert mentioned in got["detail"]
    info = await js.consumer_info(JOBS_STREAM_NAME, durable)
    for _ in range(100):  # the term is acknowledged right after the event (bounded wait)
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
        info = await js.consumer_info(JOBS_STREAM_NAME, durable)
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0
    assert info.delivered.consumer_seq == 1  # delivered once, terminated, never again
    subject = f"clipline.job.failed.v1.{tenant}.{job_id}"
    stored = await js.stream_info(JOBS_STREAM_NAME, subjects_filter=subject)
    assert stored.state.subjects == {subject: 1}


async def test_validation_error_inside_a_handler_is_retried_not_poison(
    runtime: Svc, nc: Client
) -> None:
    """Only decoding decides poison: a ValidationError from any model inside the handler (a
    bug, corrupt state, a bad upstream body) is an ordinary error, retried within the budget."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    failed = await collect(nc, f"clipline.job.failed.v1.{tenant}.*")
    router = runtime.router
    calls: list[int] = []
    done = asyncio.Event()

    @router.on_subject(
        JobAdmittedV1.subject_filter(tenant), f"test--{tenant}", decoder=decoder(JobAdmittedV1)
    )
    async def handler(event: JobAdmittedV1) -> None:
        calls.append(1)
        if len(calls) == 1:
            JobSpec.model_validate({"model": 1})  # raises pydantic.ValidationError
        done.set()

    await runtime.start()
    event = admitted(tenant)
    await seed_record(nc, record_for(event))
    await runtime.emit(event)
    await asyncio.wait_for(done.wait(), 20)
    assert len(calls) == 2
    record = await runtime.jobs.get(event.tenant, event.job_id)
    assert record is not None
    assert record.errors == {"testsvc": 1}
    assert record.status == JobStatus.ADMITTED
    assert failed.empty()


async def test_republished_event_is_stored_once(runtime: Svc, nc: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await runtime.start()
    event = admitted(tenant)
    await runtime.emit(event)
    await runtime.emit(event)  # a retried publish after a lost ack
    js = nc.jetstream()
    sub = await js.subscribe(event.subject, ordered_consumer=True, stream=JOBS_STREAM_NAME)
    first = await sub.next_msg(timeout=5)
    assert json.loads(first.data)["event_id"] == event.event_id
    info = await js.stream_info(JOBS_STREAM_NAME, subjects_filter=event.subject)
    assert info.state.subjects == {event.subject: 1}


async def test_replicas_share_one_durable_consumer(provisioned: str, admin_creds: str) -> None:
    """Two processes' worth of brokers on one durable: each event handled once, both work."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = f"test--{tenant}"
    handled: dict[str, list[str]] = {"a": [], "b": []}
    b_started = asyncio.Event()
    all_done = asyncio.Event()
    total = 12
    replicas = [Svc(provisioned, admin_creds) for _ in range(2)]

    def subscribe(name: str, rt: Svc) -> None:
        router = rt.router

        @router.on_subject(JobAdmittedV1.subject_filter(tenant), durable, max_workers=1)
        async def handler(event: JobAdmittedV1) -> None:
            handled[name].append(event.job_id)
            if name == "b":
                b_started.set()
            elif len(handled["a"]) == 1:
                # Replica a holds its first message until b has taken one: the work is shared.
                await asyncio.wait_for(b_started.wait(), 20)
            if sum(map(len, handled.values())) == total:
                all_done.set()

    for name, rt in zip(("a", "b"), replicas, strict=True):
        subscribe(name, rt)
    try:
        for rt in replicas:
            await rt.start()
        events = [admitted(tenant) for _ in range(total)]
        for event in events:
            await replicas[0].emit(event)
        await asyncio.wait_for(all_done.wait(), 30)
    finally:
        for rt in replicas:
            await rt.broker.stop()
    seen = handled["a"] + handled["b"]
    assert sorted(seen) == sorted(e.job_id for e in events)  # each exactly once
    assert handled["a"]
    assert handled["b"]


async def marker(stream: asyncio.StreamReader, prefix: bytes) -> bytes:
    """The next line the replica prints that starts with `prefix` (it also logs to stdout)."""
    while line := await stream.readline():
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"replica exited before printing {prefix!r}")


async def test_work_in_flight_when_a_replica_dies_is_resumed_by_another(
    provisioned: str, admin_creds: str
) -> None:
    """A replica is killed (SIGKILL) inside its handler, before acking: after ack_wait the
    durable consumer hands the same event to the replica that takes over."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = f"test--{tenant}"
    subject = JobAdmittedV1.subject_filter(tenant)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.stuck_replica", provisioned, subject, durable,
        admin_creds,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(marker(proc.stdout, b"ready"), 30) == b"ready"
        sender = Svc(provisioned, admin_creds)
        await sender.start()
        event = admitted(tenant)
        await sender.emit(event)
        await sender.broker.stop()
        line = await asyncio.wait_for(marker(proc.stdout, b"got "), 10)
        assert line == f"got {event.event_id}".encode()
    finally:
        proc.kill()  # SIGKILL: no ack, no graceful shutdown
        await proc.wait()
    got: asyncio.Queue[str] = asyncio.Queue()
    heir = Svc(provisioned, admin_creds)
    router = heir.router

    @router.on_subject(subject, durable, ack_wait=2.0)
    async def handler(event: JobAdmittedV1) -> None:
        got.put_nowait(event.event_id)

    await heir.start()
    try:
        assert await asyncio.wait_for(got.get(), 15) == event.event_id
    finally:
        await heir.broker.stop()

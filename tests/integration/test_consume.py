"""The house consume loop (shared/consume.py) on a real nats-server: what FastStream's
subscriber did for a service, it does: the handler's Context parameters, the job's trace carried
on by its emits, a stop that hands back what it fetched and never waits out a drain."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from shared.consume import STOP_GRACE_SECONDS
from shared.contracts import JobAdmittedV1, JobSubmittedV1
from shared.messaging import Context, Message, ServiceRouter
from shared.runtime import ServiceBroker, make_platform, wire
from tests.integration.test_delivery import admitted

pytestmark = pytest.mark.integration


class Deps:
    def __init__(self) -> None:
        self.name = "the deps"


class Replica:
    """A service-like broker (shared.runtime.make_platform) with one router."""

    def __init__(self, url: str, creds: str, provider: TracerProvider | None = None) -> None:
        self.platform = make_platform("testsvc", url, provider or TracerProvider(), Path(creds))
        self.router = ServiceRouter("testsvc", emits=[JobAdmittedV1, JobSubmittedV1])
        self.deps = Deps()

    async def start(self) -> None:
        wire(self.platform.broker, self.router, self.deps, self.platform.jobs)
        await self.platform.broker.start()

    async def stop(self) -> None:
        await self.platform.broker.stop()


class Ended(SpanProcessor):
    """Sets `event` when a consumer span ends (on the loop's thread: the span ends there)."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind == trace.SpanKind.CONSUMER:
            self.event.set()


@pytest.fixture
async def replica(provisioned: str, admin_creds: str) -> AsyncIterator[Replica]:
    r = Replica(provisioned, admin_creds)
    yield r
    await r.stop()


async def test_a_service_broker_serves_handlers_on_the_house_loop(replica: Replica) -> None:
    assert isinstance(replica.platform.broker, ServiceBroker)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    @replica.router.on_subject(JobAdmittedV1.subject_filter(tenant), f"test--{tenant}")
    async def handler(
        event: JobAdmittedV1, deps: Annotated[Deps, Context("deps")], msg: Message
    ) -> None:
        got.put_nowait((event, deps, msg))

    await replica.start()
    event = admitted(tenant)
    await replica.router.emit(event)
    decoded, deps, msg = await asyncio.wait_for(got.get(), 10)
    assert decoded == event
    assert deps is replica.deps
    assert msg.raw_message.subject == event.subject
    assert msg.headers["Nats-Msg-Id"] == event.event_id
    assert replica.router.direct is not None  # emits went straight to JetStream


async def test_an_emit_inside_a_handler_carries_the_job_trace_on(
    provisioned: str, admin_creds: str, nc: Client
) -> None:
    """The consumer span continues the trace the delivered message's headers carry, and an
    event emitted while handling carries that trace on (with a recording provider)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    consumed = asyncio.Event()
    provider.add_span_processor(Ended(consumed))
    r = Replica(provisioned, admin_creds, provider)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    out: asyncio.Queue[Msg] = asyncio.Queue()

    async def seen(msg: Msg) -> None:
        out.put_nowait(msg)

    await nc.subscribe(JobSubmittedV1.subject_filter(tenant), cb=seen)

    @r.router.on_subject(JobAdmittedV1.subject_filter(tenant), f"test--{tenant}")
    async def handler(event: JobAdmittedV1) -> None:
        await r.router.emit(
            JobSubmittedV1.fact(
                event, key="s", spec=event.spec, cost_micros=1, upstream_id="video_1"
            )
        )

    await r.start()
    try:
        with provider.get_tracer("test").start_as_current_span("request") as root:
            await r.router.emit(admitted(tenant))
        trace_id = format(root.get_span_context().trace_id, "032x")
        emitted = await asyncio.wait_for(out.get(), 10)
        assert emitted.headers is not None
        assert emitted.headers["traceparent"].split("-")[1] == trace_id
        await asyncio.wait_for(consumed.wait(), 10)  # the consumer span ends after the ack
        spans = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CONSUMER]
        assert spans[0].context.trace_id == root.get_span_context().trace_id
        assert spans[0].attributes is not None
        assert spans[0].attributes["clipline.delivery.outcome"] == "ack"
    finally:
        await r.stop()


async def test_without_a_recording_provider_the_trace_is_carried_on_without_spans(
    provisioned: str, admin_creds: str, nc: Client
) -> None:
    """No exporter (an ALWAYS_OFF sampler): no consumer span is built, yet an event emitted
    while handling carries the delivered message's trace (and its parent span) on."""
    r = Replica(provisioned, admin_creds, TracerProvider(sampler=ALWAYS_OFF))
    tenant = f"t{uuid.uuid4().hex[:8]}"
    out: asyncio.Queue[Msg] = asyncio.Queue()

    async def seen(msg: Msg) -> None:
        out.put_nowait(msg)

    await nc.subscribe(JobSubmittedV1.subject_filter(tenant), cb=seen)

    @r.router.on_subject(JobAdmittedV1.subject_filter(tenant), f"test--{tenant}")
    async def handler(event: JobAdmittedV1) -> None:
        assert trace.get_current_span().is_recording() is False
        await r.router.emit(
            JobSubmittedV1.fact(
                event, key="s", spec=event.spec, cost_micros=1, upstream_id="video_1"
            )
        )

    await r.start()
    try:
        with TracerProvider().get_tracer("test").start_as_current_span("request") as root:
            await r.router.emit(admitted(tenant))
        emitted = await asyncio.wait_for(out.get(), 10)
        assert emitted.headers is not None
        _, trace_id, span_id, _ = emitted.headers["traceparent"].split("-")
        assert trace_id == format(root.get_span_context().trace_id, "032x")
        assert span_id == format(root.get_span_context().span_id, "016x")
    finally:
        await r.stop()


async def test_a_stop_hands_back_fetched_messages_and_does_not_wait_out_a_drain(
    provisioned: str, admin_creds: str
) -> None:
    """One replica fetches a batch, is busy with one message and stops: the messages it
    fetched and never started are nak'ed at once (another replica has them well before
    ack_wait), and the stop itself takes about the grace time of the running handler, not
    nats-py's 30 s drain."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = f"test--{tenant}"
    subject = JobAdmittedV1.subject_filter(tenant)
    first = Replica(provisioned, admin_creds)
    busy = asyncio.Event()
    release = asyncio.Event()

    @first.router.on_subject(subject, durable, max_workers=1, fetch_batch=8, ack_wait=30)
    async def slow(event: JobAdmittedV1) -> None:
        busy.set()
        await release.wait()

    await first.start()
    events = [admitted(tenant) for _ in range(5)]
    for event in events:
        await first.router.emit(event)
    await asyncio.wait_for(busy.wait(), 10)
    began = time.monotonic()
    stopping = asyncio.create_task(first.stop())
    heir = Replica(provisioned, admin_creds)
    got: set[str] = set()
    four = asyncio.Event()

    @heir.router.on_subject(subject, durable, ack_wait=30)
    async def handler(event: JobAdmittedV1) -> None:
        got.add(event.job_id)
        if len(got) >= 4:
            four.set()

    await heir.start()
    try:
        await asyncio.wait_for(four.wait(), 10)  # well before the 30 s ack_wait
        release.set()
        await asyncio.wait_for(stopping, 20)
        assert time.monotonic() - began < STOP_GRACE_SECONDS + 5
    finally:
        release.set()
        await heir.stop()

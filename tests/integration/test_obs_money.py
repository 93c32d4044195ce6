"""Metrics and spans of the job store and the delivery policy on a real nats-server: a move
counted once however many deliveries and racing writers ask for it; a poison message counted
as rejected; the consumer and producer spans in OpenTelemetry's messaging conventions, the
job's attributes on them and its transition as a span event."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared.contracts import JobAdmittedV1, JobFailedV1, JobRecordV1, JobSpec, JobStatus
from shared.contracts.lifecycle import mark_generated
from shared.jobstore import KvJobStore, advance
from shared.messaging import ServiceRouter
from shared.messaging import event_decoder as decoder
from shared.runtime import make_platform, wire
from shared.streams import JOBS_BUCKET
from tests.conftest import seed_record
from tests.integration.test_consume import Ended
from tests.integration.test_delivery import collect
from tests.metered import matching, total

pytestmark = pytest.mark.integration


def record(
    tenant: str, job_id: str, status: JobStatus, entered: datetime, model: str = "sora-2"
) -> JobRecordV1:
    return JobRecordV1(
        job_id=job_id, tenant=tenant, status=status,
        spec=JobSpec(model=model, size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k", request_hash="h", history={status.value: entered},
    )  # fmt: skip


async def test_a_move_is_counted_once_whoever_races_for_it(nc: Client) -> None:
    """Eight deliveries of the same step at once (racing compare-and-sets, then redeliveries
    that find the job moved): one transition, one stage duration, as long as the state lasted."""
    kv = await nc.jetstream().key_value(JOBS_BUCKET)

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    store = KvJobStore(get_kv, nc.jetstream, max_attempts=200)
    others = [KvJobStore(get_kv, nc.jetstream, max_attempts=200) for _ in range(3)]
    tenant, job_id = f"t{uuid.uuid4().hex[:8]}", f"job_{uuid.uuid4().hex}"
    model = f"model-{tenant}"  # the stage histogram has no tenant: a model of this test's own
    entered = datetime.now(UTC) - timedelta(seconds=5)
    seeded = record(tenant, job_id, JobStatus.SUBMITTED, entered, model)
    await seed_record(nc, seeded)

    moved = await asyncio.gather(
        *(advance(s, seeded, mark_generated) for s in [store, *others] for _ in range(2))
    )
    assert all(m is not None and m.status == JobStatus.GENERATED for m in moved)
    assert total("clipline.job.transitions", tenant=tenant) == 1
    assert total("clipline.job.transitions", tenant=tenant, from_state="submitted",
                 to_state="generated", model=model, kind="generate", reason="") == 1  # fmt: skip
    (stage,) = matching("clipline.stage.duration", {"stage": "submitted", "model": model})
    assert stage.count == 1
    assert 5 <= stage.sum < 60  # seconds in `submitted`, from the record's history


async def test_a_poison_message_is_counted_rejected_and_its_spans_follow_the_conventions(
    provisioned: str, admin_creds: str, nc: Client
) -> None:
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    consumed = asyncio.Event()
    tracing.add_span_processor(Ended(consumed))
    platform = make_platform("testsvc", provisioned, tracing, Path(admin_creds))
    router = ServiceRouter("testsvc", emits=[JobAdmittedV1])
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = f"test--{tenant}"
    labels = {"service": "testsvc", "durable": durable}
    before = total("clipline.messages.rejected", **labels)
    failed = await collect(nc, f"clipline.job.failed.v1.{tenant}.*")

    @router.on_subject(
        JobAdmittedV1.subject_filter(tenant), durable, decoder=decoder(JobAdmittedV1)
    )
    async def handler(event: JobAdmittedV1) -> None:
        raise AssertionError("a poison message must not reach the handler")

    job_id = f"job_{uuid.uuid4().hex}"
    await seed_record(nc, record(tenant, job_id, JobStatus.ADMITTED, datetime.now(UTC)))
    wire(platform.broker, router, None, platform.jobs)
    await platform.broker.start()
    try:
        subject = f"clipline.job.admitted.v1.{tenant}.{job_id}"
        ack = await nc.jetstream().publish(subject, b"\xff not json {")
        assert (await asyncio.wait_for(failed.get(), 20))["reason"] == "poison_message"
        await asyncio.wait_for(consumed.wait(), 10)
    finally:
        await platform.broker.stop()

    assert total("clipline.messages.rejected", **labels) - before == 1
    assert total("clipline.messages.rejected", **labels, reason="poison_message") - before == 1
    spans = exporter.get_finished_spans()
    (consumer,) = [s for s in spans if s.kind == trace.SpanKind.CONSUMER]
    assert consumer.name == f"{JobAdmittedV1.subject_filter(tenant)} process"
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.system"] == "nats"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == subject
    assert attributes["messaging.destination.template"] == JobAdmittedV1.subject_filter(tenant)
    assert attributes["messaging.consumer.group.name"] == durable
    assert attributes["messaging.message.id"] == str(ack.seq)
    assert attributes["clipline.job.id"] == job_id
    assert attributes["clipline.tenant"] == tenant
    assert attributes["clipline.model"] == "sora-2"  # from the record the failure wrote
    assert attributes["clipline.delivery.outcome"] == "term"
    assert consumer.status.status_code == StatusCode.ERROR
    (moved,) = [e for e in consumer.events if e.name == "clipline.transition"]
    assert dict(moved.attributes or {}) == {
        "clipline.from_state": "admitted",
        "clipline.to_state": "failed",
        "clipline.reason": "poison_message",
    }
    (producer,) = [s for s in spans if s.kind == trace.SpanKind.PRODUCER]
    assert producer.name == f"{JobFailedV1.subject_filter()} send"
    assert producer.parent is not None
    assert producer.parent.span_id == consumer.context.span_id
    sent = dict(producer.attributes or {})
    assert sent["messaging.operation.type"] == "send"
    assert sent["messaging.destination.name"] == f"clipline.job.failed.v1.{tenant}.{job_id}"
    assert sent["clipline.job.id"] == job_id
    assert int(str(sent["messaging.message.id"])) > ack.seq

"""intake under TestNatsBroker: raw requests in, accepted/rejected out, job records kept."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.intake.adapters import probe_image
from services.intake.handlers import DURABLE, build_router
from services.intake.ports import Deps
from shared.contracts import JobAcceptedV1, JobRejectedV1, JobStatus, request_subject
from shared.contracts.ids import derived_event_id, fact_event_id, job_id_for
from shared.contracts.requests import REQUESTS_ROOT
from shared.messaging import NO_TENANT
from shared.registry import load_registry
from tests.component.harness import TENANT, Fakes, Harness, running
from tests.component.support import FlakyJobStore, actions, settled, validation_error
from tests.fakes import InMemoryApiKeys
from tests.images import data_url, image_bytes

PROVIDER = load_registry().provider("simulator")


def deps(f: Fakes) -> Deps:
    return Deps(f.jobs, f.inputs, f.emit, PROVIDER, probe_image, InMemoryApiKeys())


@pytest.fixture
async def intake() -> AsyncIterator[Harness]:
    async with running(build_router(), deps) as h:
        yield h


def request(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "sora-2",
        "size": "1280x720",
        "seconds": "4",
        "prompt": "a paper boat",
        "idempotency_key": "order-42",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


async def submit(
    h: Harness, body: Any, msg_id: str | None, tenant: str = TENANT, delivery: int = 1
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    await h.send_raw(request_subject(tenant), raw, msg_id, DURABLE, delivery)


async def test_valid_request_is_recorded_and_accepted(intake: Harness) -> None:
    await submit(intake, request(), "msg-1")

    job_id = job_id_for(TENANT, "order-42")
    accepted = intake.bus.one(JobAcceptedV1)
    assert accepted.job_id == job_id
    assert accepted.tenant == TENANT
    assert accepted.idempotency_key == "order-42"
    assert (accepted.spec.model, accepted.spec.size, accepted.spec.seconds) == (
        "sora-2",
        "1280x720",
        4,
    )
    assert accepted.spec.prompt == "a paper boat"
    assert accepted.event_id == fact_event_id(job_id, "accepted")
    assert accepted.subject == f"clipline.job.accepted.v1.{TENANT}.{job_id}"
    published = [p for p in intake.bus.published if p.subject == accepted.subject]
    assert [p.msg_id for p in published] == [accepted.event_id]
    assert intake.bus.events(JobRejectedV1) == []

    record = intake.jobs.records()[job_id]
    assert record.status == JobStatus.ACCEPTED
    assert record.spec == accepted.spec
    assert record.idempotency_key == "order-42"
    assert set(record.history) == {"accepted"}
    assert intake.jobs.writes == [job_id]
    assert actions(intake.bus.actions(request_subject(TENANT))) == ["ack"]


async def test_invalid_json_is_rejected_without_a_record(intake: Harness) -> None:
    await submit(intake, b"{not json", "msg-bad")

    rejected = intake.bus.one(JobRejectedV1)
    assert rejected.reason == "invalid_request"
    assert rejected.stage == "intake"
    assert rejected.tenant == TENANT
    assert rejected.job_id == job_id_for(TENANT, f"auto:{TENANT}:msg-bad")
    assert rejected.event_id == derived_event_id(f"{TENANT}:msg-bad", "rejected", "")
    assert intake.bus.events(JobAcceptedV1) == []
    assert intake.jobs.records() == {}
    # a rejection is final: the request is acked, not retried
    assert actions(intake.bus.actions(request_subject(TENANT))) == ["ack"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (request(model="sora-3"), "unknown_model"),
        (request(size="999x999"), "invalid_size"),
        (request(seconds="5"), "invalid_seconds"),
        (request(seconds=True), "invalid_seconds"),
        (request(prompt=None), "invalid_request"),
        (request(prompt="   "), "invalid_request"),
        (request(colour="blue"), "invalid_request"),
        (request(idempotency_key=""), "invalid_request"),
        (request(schema_version=2), "unsupported_version"),
        (request(tenant="globex"), "invalid_tenant"),
        (request(input_reference="not a data url"), "invalid_image"),
        ([request()], "invalid_request"),
    ],
)
async def test_invalid_request_is_rejected_with_reason(
    intake: Harness, body: Any, reason: str
) -> None:
    await submit(intake, body, "msg-invalid")

    rejected = intake.bus.one(JobRejectedV1)
    assert rejected.reason == reason
    assert rejected.detail
    assert rejected.tenant == TENANT
    assert intake.bus.events(JobAcceptedV1) == []
    assert intake.jobs.records() == {}


async def test_invalid_tenant_in_subject_is_rejected_under_no_tenant(intake: Harness) -> None:
    await submit(intake, request(), "msg-t", tenant="ACME")

    rejected = intake.bus.one(JobRejectedV1)
    assert rejected.reason == "invalid_tenant"
    assert rejected.tenant == NO_TENANT  # never published under a tenant token it did not earn
    assert rejected.job_id == job_id_for(NO_TENANT, f"auto:{NO_TENANT}:msg-t")
    assert rejected.event_id == derived_event_id(f"{NO_TENANT}:msg-t", "rejected", "")
    assert rejected.subject == f"clipline.job.rejected.v1.{NO_TENANT}.{rejected.job_id}"
    assert intake.jobs.records() == {}


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        (f"{REQUESTS_ROOT}.v1", "invalid_tenant"),  # no tenant token
        (f"{REQUESTS_ROOT}.v1.Not_A_Tenant!", "invalid_tenant"),
        (f"{REQUESTS_ROOT}.v2.{TENANT}", "unsupported_version"),
    ],
)
async def test_request_on_a_subject_intake_cannot_take_is_rejected(
    intake: Harness, subject: str, reason: str
) -> None:
    await intake.send_raw(subject, json.dumps(request()).encode(), "msg-s", DURABLE)

    rejected = intake.bus.one(JobRejectedV1)
    # A valid tenant token is kept (that tenant listens there); otherwise `_unknown`.
    owner = TENANT if reason == "unsupported_version" else NO_TENANT
    assert (rejected.reason, rejected.tenant, rejected.stage) == (reason, owner, "intake")
    assert (rejected.request_id, rejected.idempotency_key) == ("msg-s", "order-42")
    assert rejected.detail
    assert intake.bus.events(JobAcceptedV1) == []
    assert intake.jobs.records() == {}
    assert actions(intake.bus.actions(subject)) == ["ack"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="nesting-bomb"),
        pytest.param(b"{" + b'"a":{' * 50_000 + b"}" * 50_001, id="object-bomb"),
        pytest.param(b"\xff\xfe\x00\x01 garbage \xc3\x28", id="garbage-bytes"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"prompt": 7, "seconds": [4], "model": null}', id="wrong-types"),
        pytest.param(b'"just a string"', id="not-an-object"),
    ],
)
async def test_poison_request_is_rejected_exactly_once_with_a_reason(
    intake: Harness, raw: bytes
) -> None:
    await submit(intake, raw, "msg-poison")
    await submit(intake, raw, "msg-poison", delivery=2)  # redelivered: the same rejection

    first, again = intake.bus.events(JobRejectedV1)
    assert first.event_id == again.event_id  # JetStream keeps one
    assert first.reason == "invalid_request"
    assert first.detail
    assert first.tenant == TENANT
    assert first.event_id == derived_event_id(f"{TENANT}:msg-poison", "rejected", "")
    assert intake.bus.events(JobAcceptedV1) == []
    assert intake.jobs.records() == {}
    # never retried: a request that cannot be taken now never will be
    assert actions(intake.bus.actions(request_subject(TENANT))) == ["ack", "ack"]


@pytest.mark.parametrize(
    "error", [ConnectionError("kv unreachable"), validation_error()], ids=["io", "validation"]
)
async def test_store_failure_is_retried_not_rejected(error: Exception) -> None:
    async with running(build_router(), deps, jobs=FlakyJobStore(error)) as h:
        await submit(h, request(), "msg-1")

        assert h.bus.events(JobRejectedV1) == []
        assert h.bus.events(JobAcceptedV1) == []
        assert h.jobs.records() == {}
        [(action, delay)] = settled(h.bus.actions(request_subject(TENANT)))
        assert action == "nak"
        assert delay is not None
        assert delay > 0

        await submit(h, request(), "msg-1", delivery=2)  # the store is back

        assert h.bus.one(JobAcceptedV1).job_id == job_id_for(TENANT, "order-42")
        assert h.bus.events(JobRejectedV1) == []


async def test_same_idempotency_key_twice_is_one_job(intake: Harness) -> None:
    # a client retry: same body and key, a new message id (e.g. after the dedup window)
    await submit(intake, request(), "msg-1")
    first = intake.jobs.records()
    await submit(intake, request(), "msg-2")

    job_id = job_id_for(TENANT, "order-42")
    assert intake.jobs.records() == first
    assert intake.jobs.writes == [job_id]
    accepted = intake.bus.events(JobAcceptedV1)
    assert [a.job_id for a in accepted] == [job_id, job_id]
    assert accepted[0].event_id == accepted[1].event_id  # JetStream drops the repeat
    assert intake.bus.events(JobRejectedV1) == []


async def test_retry_after_the_job_moved_on_announces_nothing(intake: Harness) -> None:
    await submit(intake, request(), "msg-1")
    job_id = job_id_for(TENANT, "order-42")
    record = intake.jobs.records()[job_id]
    intake.jobs.put(record.model_copy(update={"status": JobStatus.ADMITTED}))  # pricing took it
    await submit(intake, request(), "msg-2")

    assert len(intake.bus.events(JobAcceptedV1)) == 1
    assert intake.bus.events(JobRejectedV1) == []
    assert intake.jobs.records()[job_id].status == JobStatus.ADMITTED


async def test_idempotency_key_reused_for_another_request_is_a_conflict(
    intake: Harness,
) -> None:
    await submit(intake, request(), "msg-1")
    await submit(intake, request(prompt="a different boat"), "msg-2")

    job_id = job_id_for(TENANT, "order-42")
    rejected = intake.bus.one(JobRejectedV1)
    assert rejected.reason == "idempotency_conflict"
    assert job_id in rejected.detail
    assert rejected.event_id == derived_event_id(f"{TENANT}:msg-2", "rejected", "")
    # the refusal is not published as the existing job's outcome
    assert rejected.job_id != job_id
    assert len(intake.bus.events(JobAcceptedV1)) == 1
    assert intake.jobs.records()[job_id].spec.prompt == "a paper boat"
    assert intake.jobs.writes == [job_id]


async def test_same_key_in_two_tenants_is_two_jobs(intake: Harness) -> None:
    await submit(intake, request(), "msg-1", tenant="acme")
    await submit(intake, request(), "msg-2", tenant="globex")

    accepted = intake.bus.events(JobAcceptedV1)
    assert {(a.tenant, a.job_id) for a in accepted} == {
        ("acme", job_id_for("acme", "order-42")),
        ("globex", job_id_for("globex", "order-42")),
    }
    assert len(intake.jobs.records()) == 2


async def test_requests_without_key_are_keyed_by_message(intake: Harness) -> None:
    await submit(intake, request(idempotency_key=None), "msg-a")
    await submit(intake, request(idempotency_key=None), "msg-a")  # redelivered
    await submit(intake, request(idempotency_key=None), "msg-b")  # another request

    accepted = intake.bus.events(JobAcceptedV1)
    assert [a.job_id for a in accepted] == [
        job_id_for(TENANT, f"auto:{TENANT}:msg-a"),
        job_id_for(TENANT, f"auto:{TENANT}:msg-a"),
        job_id_for(TENANT, f"auto:{TENANT}:msg-b"),
    ]
    assert accepted[0].idempotency_key == f"auto:{TENANT}:msg-a"
    assert len(intake.jobs.records()) == 2


async def test_message_ids_are_scoped_by_tenant(intake: Harness) -> None:
    await submit(intake, request(idempotency_key=None), "msg-a", tenant="acme")
    await submit(intake, request(idempotency_key=None), "msg-a", tenant="globex")

    assert len({a.job_id for a in intake.bus.events(JobAcceptedV1)}) == 2
    assert len(intake.jobs.records()) == 2


async def test_request_without_message_id_is_keyed_by_stream_sequence(intake: Harness) -> None:
    await submit(intake, b"{not json", None)

    rejected = intake.bus.one(JobRejectedV1)
    # the harness's first delivery has stream sequence 1
    assert rejected.job_id == job_id_for(TENANT, f"auto:{TENANT}:seq:1")
    assert rejected.event_id == derived_event_id(f"{TENANT}:seq:1", "rejected", "")


async def test_input_image_is_stored_and_referenced(intake: Harness) -> None:
    png = image_bytes(1280, 720)
    await submit(intake, request(input_reference=data_url(png)), "msg-img")

    job_id = job_id_for(TENANT, "order-42")
    digest = hashlib.sha256(png).hexdigest()
    ref = intake.bus.one(JobAcceptedV1).spec.input_reference
    assert ref is not None
    assert ref.object_name == f"{TENANT}/{digest}"
    assert ref.content_type == "image/png"
    assert ref.size_bytes == len(png)
    assert ref.sha256 == digest
    assert intake.inputs.objects == {f"{TENANT}/{digest}": png}
    assert intake.jobs.records()[job_id].spec.input_reference == ref


async def test_conflicting_request_never_replaces_the_jobs_image(intake: Harness) -> None:
    first, second = image_bytes(1280, 720), image_bytes(1280, 720, "JPEG")
    await submit(intake, request(input_reference=data_url(first)), "msg-1")
    await submit(intake, request(input_reference=data_url(second, "image/jpeg")), "msg-2")

    assert intake.bus.one(JobRejectedV1).reason == "idempotency_conflict"
    ref = intake.jobs.records()[job_id_for(TENANT, "order-42")].spec.input_reference
    assert ref is not None
    assert intake.inputs.objects[ref.object_name] == first


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (image_bytes(640, 480), "image/png"),  # not the requested size
        (image_bytes(1280, 720, "JPEG"), "image/png"),  # not the declared type
        (b"definitely not an image", "image/png"),
    ],
)
async def test_input_image_that_is_not_the_first_frame_is_rejected(
    intake: Harness, data: bytes, mime: str
) -> None:
    await submit(intake, request(input_reference=data_url(data, mime)), "msg-img")

    assert intake.bus.one(JobRejectedV1).reason == "invalid_image"
    assert intake.inputs.objects == {}
    assert intake.jobs.records() == {}

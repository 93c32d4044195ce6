"""submitter under TestNatsBroker: one upstream create per admitted job, typed error handling."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.submitter.handlers import build_router
from shared.contracts import (
    InputReference,
    JobAdmittedV1,
    JobFailedV1,
    JobSpec,
    JobStatus,
    JobSubmittedV1,
)
from shared.contracts.ids import derived_event_id
from shared.messaging import ServiceRouter
from shared.provider import (
    CreateVideo,
    InputImage,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from shared.runtime import Runtime
from tests.component.harness import (
    SPEC,
    TENANT,
    Harness,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.fakes import FakeProvider, upstream_video

MAX_ATTEMPTS = 3
DEADLINE = 3600.0
DURABLE = JobAdmittedV1.durable("submitter")


@dataclass
class Submitter:
    h: Harness
    provider: FakeProvider


@pytest.fixture
async def submitter() -> AsyncIterator[Submitter]:
    provider = FakeProvider()

    def build(rt: Runtime) -> ServiceRouter:
        return build_router(rt, provider, MAX_ATTEMPTS, DEADLINE)

    async with running("submitter", build) as h:
        yield Submitter(h, provider)


def admitted(job_id: str, spec: JobSpec = SPEC, cost: int = 400_000) -> JobAdmittedV1:
    return JobAdmittedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        spec=spec, cost_micros=cost,
    )  # fmt: skip


def admitted_job(s: Submitter, spec: JobSpec = SPEC, **changes: Any) -> JobAdmittedV1:
    job_id = new_job_id()
    s.h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=spec, cost_micros=400_000, **changes))
    return admitted(job_id, spec)


async def test_admitted_job_is_created_once_upstream(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates.append(upstream_video("video_abc"))
    await h.send(event)

    assert provider.created == [
        CreateVideo(
            model="sora-2", size="1280x720", seconds=4, prompt=SPEC.prompt,
            client_request_id=event.job_id, input_reference=None,
        )
    ]  # fmt: skip
    submitted = h.bus.one(JobSubmittedV1)
    assert submitted.upstream_id == "video_abc"
    assert submitted.cost_micros == 400_000
    assert submitted.spec == SPEC
    assert submitted.event_id == derived_event_id(event.event_id, "submitted", "")
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.SUBMITTED
    assert record.upstream_id == "video_abc"
    assert "submitted" in record.history
    assert [o.action for o in h.outcomes(event)] == ["ack"]


async def test_already_created_job_is_announced_again_not_recreated(
    submitter: Submitter,
) -> None:
    h, provider = submitter.h, submitter.provider
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id="video_old"))
    event = admitted(job_id)
    await h.send(event, delivery=2)

    assert provider.created == []
    submitted = h.bus.one(JobSubmittedV1)
    assert submitted.upstream_id == "video_old"
    assert submitted.event_id == derived_event_id(event.event_id, "submitted", "")
    assert h.jobs.writes == []


@pytest.mark.parametrize(
    ("status", "upstream_id"),
    [
        (JobStatus.GENERATING, "video_old"),  # moved on: the poller has it
        (JobStatus.FAILED, None),
        (JobStatus.REJECTED, None),
    ],
)
async def test_job_that_moved_on_or_ended_is_skipped(
    submitter: Submitter, status: JobStatus, upstream_id: str | None
) -> None:
    h = submitter.h
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, status, upstream_id=upstream_id))
    await h.send(admitted(job_id))

    assert submitter.provider.created == []
    assert h.bus.kinds() == ["admitted"]
    assert h.jobs.writes == []


async def test_unknown_job_is_skipped(submitter: Submitter) -> None:
    await submitter.h.send(admitted(new_job_id()))

    assert submitter.provider.created == []
    assert submitter.h.bus.kinds() == ["admitted"]


async def test_upstream_rejection_fails_the_job(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates.append(ProviderRejected("prompt is not allowed", status=400))
    await h.send(event)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "upstream_rejected"
    assert failed.stage == "submitter"
    assert failed.detail == "400: prompt is not allowed"
    assert failed.event_id == derived_event_id(event.event_id, "failed", "submitter")
    assert h.bus.events(JobSubmittedV1) == []
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.reason == "upstream_rejected"
    assert [o.action for o in h.outcomes(event)] == ["ack"]


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [(7.5, 7.5), (None, 1.0), (0.0, 1.0), (3600.0, 120.0)],
)
async def test_rate_limit_is_a_delayed_nak_not_an_error(
    submitter: Submitter, retry_after: float | None, delay: float
) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates.append(ProviderRateLimited("slow down", retry_after_seconds=retry_after))
    await h.send(event)

    assert [(o.action, o.delay) for o in h.outcomes(event)] == [("nak", delay)]
    assert h.bus.kinds() == ["admitted"]  # nothing emitted
    assert h.jobs.writes == []  # the retry budget is not spent on waiting


async def test_rate_limits_beyond_the_error_budget_still_wait(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    attempts = 3 * MAX_ATTEMPTS
    provider.creates += [ProviderRateLimited("slow down", retry_after_seconds=2.0)] * attempts
    provider.creates.append(upstream_video("video_2"))
    for delivery in range(1, attempts + 2):
        await h.send(event, delivery=delivery)

    assert [c.client_request_id for c in provider.created] == [event.job_id] * (attempts + 1)
    assert [o.action for o in h.outcomes(event)] == ["nak"] * attempts + ["ack"]
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_2"
    assert h.bus.events(JobFailedV1) == []


async def test_job_waiting_past_the_deadline_fails(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    since = datetime.now(UTC) - timedelta(seconds=DEADLINE + 60)
    event = admitted_job(submitter, since=since)
    await h.send(event, delivery=500)

    assert provider.created == []
    assert h.bus.one(JobFailedV1).reason == "submit_timeout"
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED


async def test_transient_error_is_counted_and_retried_with_backoff(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates += [ProviderUnavailable("502", status=502)] * 2
    await h.send(event, delivery=1)
    await h.send(event, delivery=2)

    # retry_delay(1) = 0.5 s, retry_delay(2) = 1 s
    assert [(o.action, o.delay) for o in h.outcomes(event)] == [("nak", 0.5), ("nak", 1.0)]
    record = h.jobs.records()[event.job_id]
    assert record.errors == {"submitter": 2}
    assert record.status == JobStatus.ADMITTED
    assert h.bus.kinds() == ["admitted", "admitted"]


async def test_spent_error_budget_fails_the_job(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter, errors={"submitter": MAX_ATTEMPTS - 1})
    provider.creates.append(ProviderUnavailable("502", status=502))
    await h.send(event, delivery=MAX_ATTEMPTS)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "retries_exhausted"
    assert failed.stage == "submitter"
    assert "ProviderUnavailable" in failed.detail
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.reason == "retries_exhausted"
    assert [o.action for o in h.outcomes(event)] == ["term"]


async def test_undecodable_admitted_event_fails_the_job(submitter: Submitter) -> None:
    h = submitter.h
    event = admitted_job(submitter)
    body = {"job_id": event.job_id, "tenant": TENANT, "cost_micros": "lots"}
    await h.send_raw(event.subject, body, "msg-poison", DURABLE)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "poison_message"
    assert failed.event_id == derived_event_id("msg-poison", "failed", "submitter")
    assert submitter.provider.created == []
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED
    assert [o.action for o in h.bus.actions(event.subject)] == ["term"]


def image_ref(name: str, data: bytes) -> InputReference:
    return InputReference(
        object_name=name, content_type="image/jpeg", size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


async def test_input_image_is_sent_upstream(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    jpeg = b"\xff\xd8\xff\xe0 a first frame"
    spec = SPEC.model_copy(update={"input_reference": image_ref(f"{TENANT}/frame", jpeg)})
    event = admitted_job(submitter, spec)
    h.inputs.objects[f"{TENANT}/frame"] = jpeg
    provider.creates.append(upstream_video("video_img"))
    await h.send(event)

    (request,) = provider.created
    assert request.input_reference == InputImage(jpeg, "image/jpeg", "input_reference.jpg")
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_img"


@pytest.mark.parametrize("stored", [None, b"another image"])
async def test_missing_or_altered_input_image_fails_the_job(
    submitter: Submitter, stored: bytes | None
) -> None:
    h, provider = submitter.h, submitter.provider
    spec = SPEC.model_copy(update={"input_reference": image_ref(f"{TENANT}/frame", b"frame")})
    event = admitted_job(submitter, spec)
    if stored is not None:
        h.inputs.objects[f"{TENANT}/frame"] = stored
    await h.send(event)

    assert provider.created == []
    assert h.bus.one(JobFailedV1).reason == "input_unavailable"
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED

"""submitter under TestNatsBroker: `submitting` recorded before each upstream create, the
upstream id linked before `submitted`, typed error handling, deadlines as timeouts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.submitter.app import build_router
from services.submitter.ports import Deps
from shared.contracts import (
    InputReference,
    JobAdmittedV1,
    JobFailedV1,
    JobSpec,
    JobStatus,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.events import JobRef
from shared.contracts.ids import fact_event_id
from shared.provider import (
    CreateVideo,
    InputImage,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    UpstreamVideo,
)
from tests.component.harness import (
    SPEC,
    TENANT,
    Fakes,
    Harness,
    admitted,
    job_record,
    new_job_id,
    running,
)
from tests.component.support import actions, settled
from tests.fakes import FakeProvider, InMemoryJobStore, InMemoryUpstreamIndex, upstream_video

MAX_ATTEMPTS = 3
DEADLINE = 3600.0
DURABLE = JobAdmittedV1.durable("submitter")


@dataclass(frozen=True)
class Seen:
    """The job as recorded at the moment of a call, and whether its upstream id was linked."""

    status: JobStatus | None
    submit_attempts: int
    linked: bool


@dataclass
class Witness:
    jobs: InMemoryJobStore
    index: InMemoryUpstreamIndex

    async def see(self, tenant: str, job_id: str) -> Seen:
        record = await self.jobs.get(tenant, job_id)
        linked = (tenant, job_id) in self.index.links.values()
        if record is None:
            return Seen(None, 0, linked)
        return Seen(record.status, record.submit_attempts, linked)


@dataclass
class WatchedProvider(FakeProvider):
    """FakeProvider that notes how the job is recorded when each create is sent."""

    witness: Witness | None = None
    at_create: list[Seen] = field(default_factory=list)

    async def create(self, request: CreateVideo) -> UpstreamVideo:
        assert self.witness is not None
        self.at_create.append(await self.witness.see(TENANT, request.client_request_id))
        return await super().create(request)


@dataclass
class WatchedIndex:
    """The upstream index, noting how the job is recorded when its upstream id is linked."""

    inner: InMemoryUpstreamIndex
    witness: Witness
    at_link: list[Seen] = field(default_factory=list)

    async def link(self, upstream_id: str, job: JobRef) -> None:
        self.at_link.append(await self.witness.see(job.tenant, job.job_id))
        await self.inner.link(upstream_id, job)

    async def owner(self, upstream_id: str) -> tuple[str, str] | None:
        return await self.inner.owner(upstream_id)


@dataclass
class Submitter:
    h: Harness
    provider: WatchedProvider
    index: WatchedIndex


@pytest.fixture
async def submitter() -> AsyncIterator[Submitter]:
    provider = WatchedProvider()

    def deps(f: Fakes) -> Deps:
        provider.witness = Witness(f.jobs, f.upstream)
        index = WatchedIndex(f.upstream, provider.witness)
        return Deps(f.jobs, f.inputs, index, provider, f.emit, DEADLINE)

    async with running(build_router(MAX_ATTEMPTS), deps) as h:
        assert isinstance(h.deps.upstream, WatchedIndex)
        yield Submitter(h, provider, h.deps.upstream)


def admitted_job(
    s: Submitter,
    spec: JobSpec = SPEC,
    status: JobStatus = JobStatus.ADMITTED,
    **changes: Any,
) -> JobAdmittedV1:
    job_id = new_job_id()
    s.h.jobs.put(job_record(job_id, status, spec=spec, cost_micros=400_000, **changes))
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
    assert submitted.event_id == fact_event_id(event.job_id, "submitted")
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.SUBMITTED
    assert record.upstream_id == "video_abc"
    # when the upstream says it created it: the poller's schedule starts there
    created = provider.created_videos[0].created_at
    assert created is not None
    assert record.upstream_created_at == datetime.fromtimestamp(created, UTC)
    assert record.submit_attempts == 1
    assert record.last_attempt_at == record.history["submitting"]
    assert record.history["admitted"] < record.history["submitting"] <= record.history["submitted"]
    assert h.upstream.links == {"video_abc": (TENANT, event.job_id)}
    assert actions(h.outcomes(event)) == ["ack"]


async def test_submitting_is_recorded_before_the_create_and_linked_before_submitted(
    submitter: Submitter,
) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates.append(upstream_video("video_abc"))
    await h.send(event)

    # A crash during the POST leaves `submitting`: the record tells a create may be upstream.
    assert provider.at_create == [Seen(JobStatus.SUBMITTING, 1, linked=False)]
    # The link comes first, so a webhook arriving at once finds its job.
    assert submitter.index.at_link == [Seen(JobStatus.SUBMITTING, 1, linked=False)]
    assert h.jobs.records()[event.job_id].status == JobStatus.SUBMITTED


async def test_job_left_submitting_with_nothing_upstream_is_created_again(
    submitter: Submitter,
) -> None:
    """(Adoption and ambiguity: test_submitter_reconcile.py.)"""
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter, status=JobStatus.SUBMITTING, submit_attempts=1)
    provider.creates.append(upstream_video("video_again"))
    await h.send(event, delivery=2)  # redelivered after a crash during the create

    assert provider.list_calls == 1  # looked upstream before creating again
    assert provider.at_create == [Seen(JobStatus.SUBMITTING, 2, linked=False)]
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_again"
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.submit_attempts) == (JobStatus.SUBMITTED, 2)


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
    # the same fact as the first announcement: JetStream keeps one
    assert submitted.event_id == fact_event_id(job_id, "submitted")
    assert h.jobs.writes == []


async def test_the_same_submission_reached_twice_is_one_fact(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates.append(upstream_video("video_abc"))
    await h.send(event)
    await h.send(admitted(event.job_id))  # another admitted event of the same job

    first, second = h.bus.events(JobSubmittedV1)
    assert first.event_id == second.event_id
    assert len(provider.created) == 1


@pytest.mark.parametrize(
    "status", [JobStatus.GENERATING, JobStatus.STORING, JobStatus.COMPLETED, JobStatus.FAILED]
)
async def test_a_created_job_that_moved_on_or_ended_is_announced_submitted_again(
    submitter: Submitter, status: JobStatus
) -> None:
    """A submitter killed between recording `submitted` and announcing it, while a webhook
    moved the job on: the redelivered `admitted` announces it (the same fact id, so JetStream
    keeps one), and creates nothing."""
    h = submitter.h
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, status, upstream_id="video_old"))
    await h.send(admitted(job_id))

    assert submitter.provider.created == []
    again = h.bus.one(JobSubmittedV1)
    assert (again.upstream_id, again.event_id) == ("video_old", fact_event_id(job_id, "submitted"))
    assert h.jobs.writes == []


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.REJECTED, JobStatus.TIMED_OUT])
async def test_job_that_ended_uncreated_is_skipped(submitter: Submitter, status: JobStatus) -> None:
    h = submitter.h
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, status, upstream_id=None))
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
    assert failed.event_id == fact_event_id(event.job_id, "failed")
    assert h.bus.events(JobSubmittedV1) == []
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert (record.reason, record.stage) == ("upstream_rejected", "submitter")
    assert record.submit_attempts == 1
    assert h.upstream.links == {}
    assert actions(h.outcomes(event)) == ["ack"]


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

    assert settled(h.outcomes(event)) == [("nak", delay)]
    assert h.bus.kinds() == ["admitted"]  # nothing emitted
    record = h.jobs.records()[event.job_id]
    assert record.errors == {}  # the retry budget is not spent on waiting
    # Refused before anything was made: back in line, no lease held, nothing to reconcile.
    assert (record.status, record.submit_attempts) == (JobStatus.ADMITTED, 1)
    assert record.attempt_alive_at is None
    assert h.jobs.writes == [event.job_id] * 2  # `submitting`, then `retry_submit`


async def test_rate_limits_beyond_the_error_budget_still_wait(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    attempts = 3 * MAX_ATTEMPTS
    provider.creates += [ProviderRateLimited("slow down", retry_after_seconds=2.0)] * attempts
    provider.creates.append(upstream_video("video_2"))
    for delivery in range(1, attempts + 2):
        await h.send(event, delivery=delivery)

    assert [c.client_request_id for c in provider.created] == [event.job_id] * (attempts + 1)
    assert actions(h.outcomes(event)) == ["nak"] * attempts + ["ack"]
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_2"
    assert h.bus.events(JobFailedV1) == []
    assert h.jobs.records()[event.job_id].submit_attempts == attempts + 1


@pytest.mark.parametrize("status", [JobStatus.ADMITTED, JobStatus.SUBMITTING])
async def test_job_waiting_past_the_deadline_times_out(
    submitter: Submitter, status: JobStatus
) -> None:
    h, provider = submitter.h, submitter.provider
    since = datetime.now(UTC) - timedelta(seconds=DEADLINE + 60)
    event = admitted_job(submitter, status=status, since=since)
    await h.send(event, delivery=500)

    assert provider.created == []
    timed_out = h.bus.one(JobTimedOutV1)
    assert (timed_out.reason, timed_out.stage) == ("submit_timeout", "submitter")
    assert timed_out.event_id == fact_event_id(event.job_id, "timed_out")
    assert h.bus.events(JobFailedV1) == []
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.reason, record.stage) == (
        JobStatus.TIMED_OUT,
        "submit_timeout",
        "submitter",
    )
    assert actions(h.outcomes(event)) == ["ack"]


async def test_transient_error_is_counted_and_retried_with_backoff(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter)
    provider.creates += [ProviderServerError("502", status=502)] * 2
    await h.send(event, delivery=1)
    await h.send(event, delivery=2)

    # retry_delay(1) = 0.5 s, retry_delay(2) = 1 s
    assert settled(h.outcomes(event)) == [("nak", 0.5), ("nak", 1.0)]
    record = h.jobs.records()[event.job_id]
    assert record.errors == {"submitter": 2}
    assert (record.status, record.submit_attempts) == (JobStatus.SUBMITTING, 2)
    assert h.bus.kinds() == ["admitted", "admitted"]


async def test_spent_error_budget_fails_the_job(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = admitted_job(submitter, errors={"submitter": MAX_ATTEMPTS - 1})
    provider.creates.append(ProviderServerError("502", status=502))
    await h.send(event, delivery=MAX_ATTEMPTS)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "retries_exhausted"
    assert failed.stage == "submitter"
    assert "ProviderServerError" in failed.detail
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.reason == "retries_exhausted"
    assert record.errors == {"submitter": MAX_ATTEMPTS}
    assert actions(h.outcomes(event)) == ["term"]


async def test_undecodable_admitted_event_fails_the_job(submitter: Submitter) -> None:
    h = submitter.h
    event = admitted_job(submitter)
    body = {"job_id": event.job_id, "tenant": TENANT, "cost_micros": "lots"}
    await h.send_raw(event.subject, body, "msg-poison", DURABLE)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "poison_message"
    assert failed.event_id == fact_event_id(event.job_id, "failed")
    assert submitter.provider.created == []
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED
    assert actions(h.bus.actions(event.subject)) == ["term"]


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
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.submit_attempts == 0  # nothing was sent upstream

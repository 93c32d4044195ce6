"""submitter under TestNatsBroker: what a failed create says decides the next delivery.

Not sent: sent again without reconciling. Explicit 5xx: reconciled, created again on no
match. Answer lost (timeout, dropped connection): reconciled, adopted on one match, failed
`create_ambiguous` on none. Refused (4xx): failed with the upstream's reason, never retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from shared.contracts import JobAdmittedV1, JobFailedV1, JobStatus, JobSubmittedV1
from shared.contracts.lifecycle import CreateOutcome
from shared.provider import (
    ProviderMalformedResponse,
    ProviderNoAnswer,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    UpstreamVideo,
)
from tests.component.harness import SPEC, admitted, job_record, new_job_id
from tests.component.support import Submitter, actions, running_submitter, settled
from tests.fakes import upstream_video


@pytest.fixture
async def submitter() -> AsyncIterator[Submitter]:
    async with running_submitter(5) as s:
        yield s


def new_job(s: Submitter) -> JobAdmittedV1:
    job_id = new_job_id()
    s.h.jobs.put(job_record(job_id, JobStatus.ADMITTED, cost_micros=400_000))
    return admitted(job_id)


def made_upstream(video_id: str) -> UpstreamVideo:
    """A video the upstream made for SPEC (what a lost answer leaves behind)."""
    video = upstream_video(video_id, size=SPEC.size, seconds=str(SPEC.seconds))
    created = int(datetime.now(UTC).timestamp())
    return video.model_copy(update={"prompt": SPEC.prompt, "created_at": created})


async def test_a_create_that_never_left_is_sent_again_without_reconciling(
    submitter: Submitter,
) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderNotSent("POST videos: ConnectError"), upstream_video("video_1")]

    await h.send(event, delivery=1)
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.create_outcome) == (JobStatus.SUBMITTING, CreateOutcome.NOT_SENT)
    assert record.attempt_alive_at is None
    assert record.errors == {"submitter": 1}
    assert record.create_may_exist is False
    await h.send(event, delivery=2)

    assert provider.list_calls == 0  # nothing could exist: no listing
    assert len(provider.created) == 2
    record = h.jobs.records()[event.job_id]
    assert (record.upstream_id, record.submit_attempts) == ("video_1", 2)
    assert record.create_outcome == CreateOutcome.CREATED
    assert actions(h.outcomes(event)) == ["nak", "ack"]


async def test_a_5xx_is_reconciled_then_created_again_when_nothing_matches(
    submitter: Submitter,
) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderServerError("boom", status=503), upstream_video("video_2")]

    await h.send(event, delivery=1)
    record = h.jobs.records()[event.job_id]
    assert record.create_outcome == CreateOutcome.SERVER_ERROR
    assert record.create_may_exist
    await h.send(event, delivery=2)

    assert provider.list_calls == 1  # reconciled before the second create
    assert len(provider.created) == 2
    assert h.jobs.records()[event.job_id].upstream_id == "video_2"
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_2"


async def test_a_5xx_whose_create_exists_after_all_is_adopted(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderServerError("boom", status=500)]
    provider.listed = [made_upstream("video_made_anyway")]

    await h.send(event, delivery=1)
    await h.send(event, delivery=2)

    assert len(provider.created) == 1
    assert h.jobs.records()[event.job_id].upstream_id == "video_made_anyway"


@pytest.mark.parametrize(
    "lost",
    [
        ProviderNoAnswer("POST videos: RemoteProtocolError"),
        ProviderNoAnswer("POST videos: ReadTimeout"),
        ProviderMalformedResponse("upstream returned a body that is not a Video"),
        RuntimeError("anything else: counted as a lost answer"),
    ],
)
async def test_a_lost_answer_adopts_the_one_match(submitter: Submitter, lost: Exception) -> None:
    """Looked for at once, in the same delivery: no error counted, no backoff before it."""
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [lost]
    provider.listed = [made_upstream("video_dropped")]  # the upstream made it, the answer died

    await h.send(event, delivery=1)

    assert len(provider.created) == 1
    assert provider.list_calls == 1
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.upstream_id) == (JobStatus.SUBMITTED, "video_dropped")
    assert record.errors == {}
    assert actions(h.outcomes(event)) == ["ack"]
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_dropped"


async def test_a_lost_answer_listed_late_is_adopted_by_the_next_delivery(
    submitter: Submitter,
) -> None:
    """Not listed yet when looked for at once: the error's backoff, then the reconcile."""
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderNoAnswer("POST videos: RemoteProtocolError")]

    await h.send(event, delivery=1)  # nothing listed yet
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.create_outcome) == (JobStatus.SUBMITTING, CreateOutcome.NO_ANSWER)
    assert record.errors == {"submitter": 1}
    assert settled(h.outcomes(event)) == [("nak", 0.5)]  # retry_delay(1)

    provider.listed = [made_upstream("video_listed_late")]
    await h.send(event, delivery=2)

    assert len(provider.created) == 1
    assert provider.list_calls == 2  # at once, then the next delivery's reconcile
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.upstream_id) == (JobStatus.SUBMITTED, "video_listed_late")


async def test_a_lost_answer_with_no_match_fails_ambiguous_and_never_creates_again(
    submitter: Submitter,
) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderNoAnswer("POST videos: ReadTimeout")]

    await h.send(event, delivery=1)
    await h.send(event, delivery=2)

    assert len(provider.created) == 1
    failed = h.bus.one(JobFailedV1)
    assert (failed.reason, failed.stage) == ("create_ambiguous", "submitter")
    assert "answer was lost" in failed.detail
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.create_may_exist


@pytest.mark.parametrize(
    ("refusal", "reason", "detail"),
    [
        (
            ProviderRejected("bad size", status=400, code="invalid_value"),
            "upstream_rejected",
            "400 invalid_value: bad size",
        ),
        (
            ProviderRejected("blocked", status=400, code="moderation_blocked"),
            "moderation_blocked",
            "400 moderation_blocked: blocked",
        ),
        (ProviderRejected("no key", status=401), "upstream_rejected", "401: no key"),
        (
            ProviderNotFound("The model does not exist", status=404, code="model_not_found"),
            "upstream_rejected",
            "404 model_not_found: The model does not exist",
        ),
        (
            ProviderRejected("too long", status=422, code="invalid_value"),
            "upstream_rejected",
            "422 invalid_value: too long",
        ),
    ],
)
async def test_a_refused_create_fails_with_the_upstreams_reason_and_is_never_retried(
    submitter: Submitter, refusal: Exception, reason: str, detail: str
) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [refusal]

    await h.send(event)

    failed = h.bus.one(JobFailedV1)
    assert (failed.reason, failed.detail, failed.stage) == (reason, detail, "submitter")
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert (record.create_outcome, record.create_may_exist) == (CreateOutcome.REFUSED, False)
    assert actions(h.outcomes(event)) == ["ack"]
    assert len(provider.created) == 1
    assert provider.list_calls == 0


async def test_reconciling_reads_back_past_the_newest_hundred(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderNoAnswer("POST videos: RemoteProtocolError")]
    others = [made_upstream(f"video_other_{n}") for n in range(150)]
    others = [v.model_copy(update={"prompt": f"another job {n}"}) for n, v in enumerate(others)]
    provider.listed = [*others, made_upstream("video_dropped")]  # 150 newer creates since

    await h.send(event, delivery=1)
    await h.send(event, delivery=2)

    assert h.jobs.records()[event.job_id].upstream_id == "video_dropped"
    assert len(provider.created) == 1


async def test_a_rate_limited_listing_waits_without_spending_the_error_budget(
    submitter: Submitter,
) -> None:
    h, provider = submitter.h, submitter.provider
    event = new_job(submitter)
    provider.creates = [ProviderServerError("boom", status=503)]
    await h.send(event, delivery=1)
    limited = ProviderRateLimited("slow down", retry_after_seconds=3.0)

    async def rate_limited(limit: int = 100, since: int | None = None) -> list[UpstreamVideo]:
        raise limited

    provider.recent = rate_limited  # type: ignore[method-assign]
    await h.send(event, delivery=2)

    assert settled(h.outcomes(event))[-1] == ("nak", 3.0)
    record = h.jobs.records()[event.job_id]
    assert record.errors == {"submitter": 1}  # the 5xx only
    assert record.status == JobStatus.SUBMITTING

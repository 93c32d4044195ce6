"""submitter under TestNatsBroker: a job left `submitting` is reconciled before any new create."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.submitter.handlers import claim_attempt
from shared.contracts import JobAdmittedV1, JobFailedV1, JobRecordV1, JobStatus, JobSubmittedV1
from shared.contracts.lifecycle import CreateOutcome, begin_submit, end_attempt
from shared.provider import CreateVideo, UpstreamVideo
from tests.component.harness import (
    SPEC,
    TENANT,
    admitted,
    job_record,
    new_job_id,
)
from tests.component.support import Submitter, running_submitter
from tests.fakes import FakeProvider, InMemoryJobStore, upstream_video


@pytest.fixture
async def submitter() -> AsyncIterator[Submitter]:
    async with running_submitter(3) as s:
        yield s


def left_submitting(s: Submitter) -> JobAdmittedV1:
    """A job whose earlier create attempt may have reached the upstream (crash, lost answer)."""
    job_id = new_job_id()
    attempt = datetime.now(UTC) - timedelta(seconds=5)
    record = job_record(job_id, JobStatus.ADMITTED, cost_micros=400_000)
    history = {**record.history, JobStatus.SUBMITTING.value: attempt}
    s.h.jobs.put(
        record.model_copy(
            update={
                "status": JobStatus.SUBMITTING,
                "history": history,
                "submit_attempts": 1,
                "last_attempt_at": attempt,
            }
        )
    )
    return admitted(job_id)


def listed(video_id: str, *, prompt: str = SPEC.prompt, age: float = 0.0) -> UpstreamVideo:
    video = upstream_video(video_id, size=SPEC.size, seconds=str(SPEC.seconds))
    created = int((datetime.now(UTC) - timedelta(seconds=age)).timestamp())
    return video.model_copy(update={"prompt": prompt, "created_at": created})


async def test_the_lost_create_is_adopted_and_nothing_is_created(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = left_submitting(submitter)
    lost = listed("video_lost", age=5.0)
    provider.listed = [listed("video_other", prompt="not this one"), lost]

    await h.send(event)

    assert provider.created == []
    assert provider.list_calls == 1
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.SUBMITTED
    assert record.upstream_id == "video_lost"
    assert lost.created_at is not None  # it has run since then: the poller's schedule knows
    assert record.upstream_created_at == datetime.fromtimestamp(lost.created_at, UTC)
    assert await h.upstream.owner("video_lost") == (TENANT, event.job_id)
    assert h.bus.one(JobSubmittedV1).upstream_id == "video_lost"


async def test_no_match_creates_once(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = left_submitting(submitter)
    provider.listed = [listed("video_old", age=3600.0)]  # before the attempt
    provider.creates = [upstream_video("video_new")]

    await h.send(event)

    assert len(provider.created) == 1
    record = h.jobs.records()[event.job_id]
    assert record.upstream_id == "video_new"
    assert record.submit_attempts == 2


async def test_a_video_owned_by_another_job_is_never_adopted(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = left_submitting(submitter)
    provider.listed = [listed("video_theirs")]
    await h.upstream.link("video_theirs", job_record(new_job_id(), JobStatus.SUBMITTED))
    provider.creates = [upstream_video("video_mine")]

    await h.send(event)

    assert h.jobs.records()[event.job_id].upstream_id == "video_mine"
    assert len(provider.created) == 1


async def test_two_candidates_fail_the_job_as_ambiguous(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    event = left_submitting(submitter)
    provider.listed = [listed("video_a"), listed("video_b")]

    await h.send(event)

    assert provider.created == []
    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "create_ambiguous"
    assert "video_a" in failed.detail
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED


async def test_a_live_attempt_elsewhere_is_waited_for(submitter: Submitter) -> None:
    """A duplicate delivery while another worker's create runs (its lease is fresh) neither
    lists nor creates: it comes back when the lease would have run out."""
    h, provider = submitter.h, submitter.provider
    event = left_submitting(submitter)
    record = h.jobs.records()[event.job_id]
    h.jobs.put(record.model_copy(update={"attempt_alive_at": datetime.now(UTC)}))

    await h.send(event)

    assert provider.created == []
    assert provider.list_calls == 0
    (outcome,) = [o for o in h.outcomes(event) if o.action != "in_progress"]
    assert outcome.action == "nak"
    assert outcome.delay is not None
    assert 5.0 < outcome.delay <= 6.5
    assert h.jobs.records()[event.job_id].errors == {}  # waiting is not an error


async def test_a_running_create_renews_its_lease(
    submitter: Submitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the POST is in flight the record's lease is renewed, so it never looks lost."""
    monkeypatch.setattr("services.submitter.handlers.ATTEMPT_LEASE_SECONDS", 0.3)
    h, provider = submitter.h, submitter.provider
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, JobStatus.ADMITTED, cost_micros=400_000))
    renewals: list[datetime] = []

    class SlowCreate(FakeProvider):
        async def create(self, request: CreateVideo) -> UpstreamVideo:
            first = h.jobs.records()[job_id].attempt_alive_at
            deadline = asyncio.get_running_loop().time() + 5
            while (alive := h.jobs.records()[job_id].attempt_alive_at) == first:
                assert asyncio.get_running_loop().time() < deadline, "the lease was not renewed"
                await asyncio.sleep(0.02)  # polling the condition, with a deadline
            assert alive is not None
            assert first is not None
            renewals.append(alive)
            return await super().create(request)

    slow = SlowCreate(creates=[upstream_video("video_slow")])
    provider.create = slow.create  # type: ignore[method-assign]
    await h.send(admitted(job_id))
    assert renewals
    assert h.jobs.records()[job_id].upstream_id == "video_slow"


async def test_of_two_deliveries_that_decided_to_create_one_claims_the_attempt() -> None:
    """Both read the job with the same attempt count; the first claim raises it, so the second
    finds another attempt started and does not create, even once that attempt's lease is
    cleared again (the count only grows: no A-B-A)."""
    jobs = InMemoryJobStore()
    job_id = new_job_id()
    jobs.put(job_record(job_id, JobStatus.ADMITTED, cost_micros=1))
    event = admitted(job_id, cost=1)

    first = await claim_attempt(jobs, event, 0)
    claimed = jobs.records()[job_id]
    # its create got no answer
    cleared = end_attempt(claimed, datetime.now(UTC), attempt=1, outcome=CreateOutcome.NO_ANSWER)
    jobs.put(cleared)
    second = await claim_attempt(jobs, event, 0)

    assert (first, second) == (True, False)
    final = jobs.records()[job_id]
    assert (final.status, final.submit_attempts) == (JobStatus.SUBMITTING, 1)


async def test_a_delivery_that_loses_the_claim_comes_back_instead_of_acking(
    submitter: Submitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acking would also drop the winner's copy of the message; a nak lets it decide again."""
    h, provider = submitter.h, submitter.provider
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, JobStatus.ADMITTED, cost_micros=1))
    event = admitted(job_id, cost=1)

    real_get = h.jobs.get
    calls: list[int] = []

    async def stale_get(tenant: str, job_id: str) -> JobRecordV1 | None:
        seen = await real_get(tenant, job_id)
        if not calls and seen is not None:  # the handler's first read, then a rival's claim
            h.jobs.put(begin_submit(seen, datetime.now(UTC)))
        calls.append(1)
        return seen

    monkeypatch.setattr(h.jobs, "get", stale_get)
    await h.send(event)

    assert provider.created == []
    (outcome,) = [o for o in h.outcomes(event) if o.action != "in_progress"]
    assert outcome.action == "nak"
    assert h.jobs.records()[job_id].submit_attempts == 1  # the rival's attempt only

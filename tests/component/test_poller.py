"""poller under TestNatsBroker: progress with delayed naks (durable timers), then the outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.poller.app import build_router
from services.poller.domain import PollPolicy
from services.poller.ports import Deps
from shared.contracts import (
    JobFailedV1,
    JobGeneratedV1,
    JobProgressV1,
    JobStatus,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.ids import fact_event_id
from shared.provider import (
    ProviderMalformedResponse,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from tests.component.harness import (
    SPEC,
    TENANT,
    Harness,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.component.support import actions, settled
from tests.fakes import FakeProvider, FixedExpectations, upstream_video

POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3 * 3600.0)
VIDEO = "video_abc"


@dataclass
class Poller:
    h: Harness
    provider: FakeProvider
    expectations: FixedExpectations


@pytest.fixture
async def poller() -> AsyncIterator[Poller]:
    """A poller expecting every job done at once: it looks at each as soon as it arrives."""
    async with following(expected=0.0) as p:
        yield p


@asynccontextmanager
async def following(*, expected: float) -> AsyncIterator[Poller]:
    provider, expectations = FakeProvider(), FixedExpectations(expected)
    deps = lambda f: Deps(f.jobs, f.emit, provider, POLICY, expectations)  # noqa: E731
    async with running(build_router(), deps) as h:
        yield Poller(h, provider, expectations)


def submitted(job_id: str) -> JobSubmittedV1:
    return JobSubmittedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        spec=SPEC, cost_micros=400_000, upstream_id=VIDEO,
    )  # fmt: skip


def submitted_job(p: Poller, *, ago: timedelta = timedelta(seconds=10)) -> JobSubmittedV1:
    job_id = new_job_id()
    since = datetime.now(UTC) - ago - 2 * timedelta(seconds=1)
    record = job_record(job_id, JobStatus.SUBMITTED, since=since, upstream_id=VIDEO)
    p.h.jobs.put(record)
    return submitted(job_id)


async def test_in_progress_reports_progress_and_polls_again_later(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves.append((upstream_video(VIDEO, "in_progress", progress=42), 2.5))
    await h.send(event)

    assert provider.retrieved == [VIDEO]
    progress = h.bus.one(JobProgressV1)
    assert progress.progress == 42
    assert progress.upstream_status == "in_progress"
    assert progress.upstream_id == VIDEO
    assert progress.event_id == fact_event_id(event.job_id, "progress", "42")
    # "not ready yet": a delayed nak (the durable timer of the next look), never an ack
    assert actions(h.outcomes(event)) == ["nak"]
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.GENERATING
    assert record.progress == 42


@pytest.mark.parametrize(
    ("hint", "low", "high"),
    [(None, 8.0, 13.5), (0.0, 8.0, 13.5), (20.0, 20.0, 20.0), (600.0, 30.0, 30.0)],
)
async def test_the_next_look_backs_off_honours_the_hint_and_the_cap(
    poller: Poller, hint: float | None, low: float, high: float
) -> None:
    """Expected done at once, submitted 10 s ago: that overdue, so the next look is as far
    (jitter: a tenth either way); the upstream's hint the earliest, 30 s the latest."""
    event = submitted_job(poller)
    poller.provider.retrieves.append((upstream_video(VIDEO, "queued"), hint))
    await poller.h.send(event)

    [(action, delay)] = settled(poller.h.outcomes(event))
    assert action == "nak"
    assert delay is not None
    assert low <= delay <= high


async def test_a_job_not_yet_expected_done_is_not_looked_at() -> None:
    async with following(expected=600.0) as p:
        event = submitted_job(p)  # submitted 10 s ago
        await p.h.send(event)

        assert p.provider.retrieved == []  # no GET while it surely runs
        [(action, delay)] = settled(p.h.outcomes(event))
        assert action == "nak"
        assert delay == pytest.approx(590.0, abs=1.0)  # the first look: when it is expected done
        assert p.h.jobs.records()[event.job_id].status == JobStatus.SUBMITTED


async def test_a_job_created_upstream_long_before_it_was_recorded_is_looked_at_at_once() -> None:
    """An adopted job (its create's answer was lost): it has run since the upstream created
    it, not since `submitted` (10 s ago), so it is due now, not 290 s from now."""
    now = datetime.now(UTC)
    # accepted 700 s ago, admitted 355, submitted 10 s ago
    since, step = now - timedelta(seconds=700), timedelta(seconds=345)
    async with following(expected=300.0) as p:
        job_id, created = new_job_id(), now - timedelta(seconds=320)
        p.h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id=VIDEO,
                                upstream_created_at=created, since=since, step=step))  # fmt: skip
        p.provider.retrieves.append((upstream_video(VIDEO, "completed", took=300), None))
        await p.h.send(submitted(job_id))

        assert p.provider.retrieved == [VIDEO]
        assert p.h.bus.one(JobGeneratedV1).job_id == job_id


@pytest.mark.parametrize("skew", [-3600, 3600])
async def test_an_upstream_clock_far_off_is_not_believed(skew: int) -> None:
    """created_at is trusted between admission (355 s ago, less a minute) and submission (10 s
    ago): an hour behind counts as 415 s, an hour ahead as 10 s."""
    now = datetime.now(UTC)
    since, step = now - timedelta(seconds=700), timedelta(seconds=345)
    async with following(expected=600.0) as p:
        job_id = new_job_id()
        created = now - timedelta(seconds=320) + timedelta(seconds=skew)
        p.h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id=VIDEO,
                                upstream_created_at=created, since=since, step=step))  # fmt: skip
        event = submitted(job_id)
        await p.h.send(event)

        assert p.provider.retrieved == []  # not due: nothing timed out or looked at early
        [(action, delay)] = settled(p.h.outcomes(event))
        assert action == "nak"
        assert delay == pytest.approx(185.0 if skew < 0 else 590.0, abs=1.5)


async def test_a_generated_job_teaches_its_generation_time() -> None:
    async with following(expected=0.0) as p:
        event = submitted_job(p)
        p.provider.retrieves.append((upstream_video(VIDEO, "completed", took=95), None))
        await p.h.send(event)

        assert actions(p.h.outcomes(event)) == ["ack"]
        assert p.expectations.learned == [(SPEC, VIDEO, 95.0)]  # by the upstream's own clock


async def test_progress_is_reported_only_when_it_rises(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves += [
        (upstream_video(VIDEO, "in_progress", progress=10), 1.0),
        (upstream_video(VIDEO, "in_progress", progress=10), 1.0),
        (upstream_video(VIDEO, "in_progress", progress=5), 1.0),
        (upstream_video(VIDEO, "in_progress", progress=19), 1.0),  # not a step of 10 more
        (upstream_video(VIDEO, "in_progress", progress=60), 1.0),
    ]
    for delivery in range(1, 6):
        await h.send(event, delivery=delivery)  # each poll is a redelivery of one message

    assert [p.progress for p in h.bus.events(JobProgressV1)] == [10, 60]
    assert actions(h.outcomes(event)) == ["nak"] * 5
    assert h.jobs.records()[event.job_id].progress == 60


async def test_completed_upstream_is_generated(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    await h.send(event)

    generated = h.bus.one(JobGeneratedV1)
    assert generated.upstream_id == VIDEO
    assert generated.cost_micros == 400_000
    assert generated.event_id == fact_event_id(event.job_id, "generated")
    assert generated.expires_at is None  # the upstream did not say
    assert actions(h.outcomes(event)) == ["ack"]
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.GENERATED
    assert record.progress == 100


async def test_generated_event_says_when_the_upstream_assets_expire(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    expires = int(datetime.now(UTC).timestamp()) + 3600
    video = upstream_video(VIDEO, "completed", progress=100).model_copy(
        update={"expires_at": expires}
    )
    provider.retrieves.append((video, None))
    await h.send(event)

    assert h.bus.one(JobGeneratedV1).expires_at == datetime.fromtimestamp(expires, UTC)


async def test_generated_job_is_announced_again_without_polling(poller: Poller) -> None:
    h = poller.h
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO))
    event = submitted(job_id)
    await h.send(event)

    assert poller.provider.retrieved == []
    # the same fact as the first announcement: JetStream keeps one
    assert h.bus.one(JobGeneratedV1).event_id == fact_event_id(job_id, "generated")


@pytest.mark.parametrize(
    "status",
    [JobStatus.STORING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT],
)
async def test_moved_on_or_ended_job_is_not_polled(poller: Poller, status: JobStatus) -> None:
    job_id = new_job_id()
    poller.h.jobs.put(job_record(job_id, status, upstream_id=VIDEO))
    event = submitted(job_id)
    await poller.h.send(event)

    assert poller.provider.retrieved == []
    assert poller.h.bus.kinds() == ["submitted"]
    assert actions(poller.h.outcomes(event)) == ["ack"]


async def test_upstream_failure_fails_the_job_with_its_code(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    error = ("moderation_blocked", "the prompt was blocked")
    provider.retrieves.append((upstream_video(VIDEO, "failed", error=error), None))
    await h.send(event)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "moderation_blocked"
    assert failed.detail == "the prompt was blocked"
    assert failed.stage == "poller"
    assert failed.upstream_id == VIDEO
    assert failed.event_id == fact_event_id(event.job_id, "failed")
    assert h.bus.events(JobGeneratedV1) == []
    assert actions(h.outcomes(event)) == ["ack"]
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.reason == "moderation_blocked"


async def test_vanished_upstream_job_is_lost(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves.append(ProviderNotFound("no such video", status=404))
    await h.send(event)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "upstream_lost"
    assert failed.detail == "no such video"
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED
    assert actions(h.outcomes(event)) == ["ack"]


async def test_job_past_deadline_times_out(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller, ago=timedelta(seconds=POLICY.deadline + 60))
    provider.retrieves.append((upstream_video(VIDEO, "in_progress", progress=50), 1.0))
    await h.send(event)

    timed_out = h.bus.one(JobTimedOutV1)
    assert (timed_out.reason, timed_out.stage) == ("upstream_timeout", "poller")
    assert timed_out.upstream_id == VIDEO  # the upstream job may still finish, and bill
    assert timed_out.event_id == fact_event_id(event.job_id, "timed_out")
    assert h.bus.events(JobFailedV1) == []
    assert h.bus.events(JobProgressV1) == []
    record = h.jobs.records()[event.job_id]
    assert (record.status, record.reason, record.stage) == (
        JobStatus.TIMED_OUT,
        "upstream_timeout",
        "poller",
    )
    assert actions(h.outcomes(event)) == ["ack"]


@pytest.mark.parametrize(
    ("retry_after", "delay"), [(12.0, 12.0), (None, POLICY.default_delay), (3600.0, 30.0)]
)
async def test_rate_limit_polls_again_later_without_spending_budget(
    poller: Poller, retry_after: float | None, delay: float
) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves.append(ProviderRateLimited("slow down", retry_after_seconds=retry_after))
    await h.send(event)

    assert settled(h.outcomes(event)) == [("nak", delay)]
    assert h.bus.kinds() == ["submitted"]
    assert h.jobs.writes == []


@pytest.mark.parametrize(
    "error", [ProviderUnavailable("503", status=503), ProviderMalformedResponse("bad json")]
)
async def test_transient_upstream_error_is_counted_and_retried(
    poller: Poller, error: Exception
) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves.append(error)
    await h.send(event)

    assert settled(h.outcomes(event)) == [("nak", 0.5)]  # retry_delay(1)
    assert h.bus.kinds() == ["submitted"]
    assert h.jobs.records()[event.job_id].errors == {"poller": 1}


async def test_job_past_deadline_times_out_even_while_upstream_errors(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller, ago=timedelta(seconds=POLICY.deadline + 60))
    provider.retrieves.append(ProviderUnavailable("503", status=503))
    await h.send(event, delivery=10_000)

    assert provider.retrieved == [VIDEO]  # asked first; unable to answer past the deadline
    assert h.bus.one(JobTimedOutV1).reason == "upstream_timeout"
    assert h.jobs.records()[event.job_id].status == JobStatus.TIMED_OUT


async def test_a_video_finished_by_the_deadline_is_taken_not_timed_out(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller, ago=timedelta(seconds=POLICY.deadline + 1))
    provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    await h.send(event)

    assert h.bus.kinds() == ["submitted", "generated"]  # the event sent, then the outcome
    assert h.jobs.records()[event.job_id].status == JobStatus.GENERATED


async def test_unknown_upstream_status_fails_the_job(poller: Poller) -> None:
    event = submitted_job(poller)
    poller.provider.retrieves.append((upstream_video(VIDEO, "archived"), None))
    await poller.h.send(event)

    assert poller.h.bus.one(JobFailedV1).reason == "upstream_protocol"


async def test_upstream_rejection_fails_the_job(poller: Poller) -> None:
    event = submitted_job(poller)
    poller.provider.retrieves.append(ProviderRejected("bad id", status=400))
    await poller.h.send(event)

    failed = poller.h.bus.one(JobFailedV1)
    assert failed.reason == "upstream_rejected"
    assert failed.detail == "400: bad id"


async def test_spent_error_budget_fails_the_job(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    job_id = new_job_id()
    record = job_record(job_id, JobStatus.GENERATING, upstream_id=VIDEO, errors={"poller": 59})
    h.jobs.put(record)
    event = submitted(job_id)
    provider.retrieves.append(ProviderUnavailable("503", status=503))
    await h.send(event, delivery=200)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "retries_exhausted"
    assert failed.stage == "poller"
    assert h.jobs.records()[job_id].status == JobStatus.FAILED
    assert actions(h.outcomes(event)) == ["term"]

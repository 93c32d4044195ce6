"""poller's metrics and spans (issue 20): each look counted by outcome in a short span of its
own, the jobs it follows and those overdue, generation time, 429 waits."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.poller.app import build_router
from services.poller.domain import PollPolicy
from services.poller.observe import PollerObserver
from services.poller.ports import Deps
from shared.contracts import JobStatus, JobSubmittedV1
from shared.provider import ProviderRateLimited, ProviderUnavailable
from tests.component.harness import SPEC, TENANT, Harness, job_record, new_event_id, new_job_id
from tests.component.harness import running as running_service
from tests.fakes import FakeProvider, FixedExpectations, upstream_video
from tests.otel_probe import histogram_sum, metric_reader, reading, span_exporter, spans_named

POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3 * 3600.0)
VIDEO = "video_abc"


@pytest.fixture(autouse=True)
def _metrics() -> None:
    metric_reader()  # installed before anything records


@dataclass
class Poller:
    h: Harness
    provider: FakeProvider
    observer: PollerObserver
    labels: dict[str, str]


@asynccontextmanager
async def poller(*, expected: float = 0.0, grace: float = 300.0) -> AsyncIterator[Poller]:
    """A poller whose metrics carry a provider label of their own (this test's points only)."""
    name = f"p{uuid.uuid4().hex[:8]}"
    provider, observer = FakeProvider(), PollerObserver(name, grace)
    deps = lambda f: Deps(  # noqa: E731
        f.jobs, f.emit, provider, POLICY, FixedExpectations(expected), observer=observer
    )
    async with running_service(build_router(), deps) as h:
        yield Poller(h, provider, observer, {"provider": name})


def submitted_job(p: Poller, *, ago: timedelta = timedelta(seconds=10)) -> JobSubmittedV1:
    job_id = new_job_id()
    since = datetime.now(UTC) - ago - 2 * timedelta(seconds=1)
    p.h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, since=since, upstream_id=VIDEO))
    return JobSubmittedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        spec=SPEC, cost_micros=400_000, upstream_id=VIDEO,
    )  # fmt: skip


async def test_a_finished_look_is_counted_timed_and_spanned_and_the_job_no_longer_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = span_exporter(monkeypatch)
    async with poller() as p:
        event = submitted_job(p)
        video = upstream_video(VIDEO, "completed", progress=100)
        video = video.model_copy(update={"created_at": 1_000, "completed_at": 1_042})
        p.provider.retrieves.append((video, None))
        await p.h.send(event)

        assert reading("clipline.poller.polls", {**p.labels, "outcome": "ended"}) == 1
        ended = {**p.labels, "model": "sora-2", "size": "1280x720", "outcome": "completed"}
        assert reading("clipline.generation.duration", ended) == 1
        assert histogram_sum("clipline.generation.duration", ended) == 42.0  # upstream's clock
        assert p.observer.counts() == (0, 0)  # acked: past following here
    (look,) = spans_named(spans, "clipline.poll")
    assert look.attributes is not None
    assert look.attributes["clipline.job.id"] == event.job_id
    assert look.attributes["clipline.poll.outcome"] == "ended"
    assert look.end_time is not None  # a short span: ended with its look


async def test_a_job_still_running_waits_and_turns_overdue_past_expected_plus_grace() -> None:
    async with poller(expected=5.0, grace=3.0) as p:  # submitted ~12 s ago: due at 8 s
        event = submitted_job(p)
        p.provider.retrieves.append((upstream_video(VIDEO, "in_progress", progress=40), None))
        await p.h.send(event)

        assert reading("clipline.poller.polls", {**p.labels, "outcome": "pending"}) == 1
        assert p.observer.counts() == (1, 1)
        p.observer.report()
        assert reading("clipline.poller.waiting", p.labels) == 1
        assert reading("clipline.poller.overdue", p.labels) == 1


async def test_a_job_within_its_expected_time_waits_without_being_overdue() -> None:
    async with poller(expected=600.0, grace=0.0) as p:
        event = submitted_job(p)
        await p.h.send(event)  # not expected done yet: no look, a timer
        assert p.provider.retrieved == []
        assert p.observer.counts() == (1, 0)
        p.observer.report()
        assert reading("clipline.poller.waiting", p.labels) == 1
        assert reading("clipline.poller.overdue", p.labels) == 0


async def test_a_429_is_a_throttled_look_and_a_rate_limit_wait() -> None:
    async with poller() as p:
        event = submitted_job(p)
        p.provider.retrieves.append(ProviderRateLimited("slow down", retry_after_seconds=12.0))
        await p.h.send(event)

        assert reading("clipline.poller.polls", {**p.labels, "outcome": "throttled"}) == 1
        waits = {**p.labels, "model": "sora-2", "cause": "upstream_429"}
        assert reading("clipline.rate_limit.waits", waits) == 1
        assert histogram_sum("clipline.rate_limit.wait", waits) == 12.0
        assert p.observer.counts()[0] == 1


async def test_a_failed_look_is_an_error_and_the_job_is_still_followed() -> None:
    async with poller() as p:
        event = submitted_job(p)
        p.provider.retrieves.append(ProviderUnavailable("503", status=503))
        await p.h.send(event)

        assert reading("clipline.poller.polls", {**p.labels, "outcome": "error"}) == 1
        assert p.observer.counts()[0] == 1


async def test_an_upstream_failure_records_its_generation_time_as_failed() -> None:
    async with poller() as p:
        event = submitted_job(p)
        failed = upstream_video(VIDEO, "failed", progress=0)
        p.provider.retrieves.append((failed, None))
        await p.h.send(event)

        labels = {**p.labels, "model": "sora-2", "outcome": "failed"}
        assert reading("clipline.generation.duration", labels) == 1
        assert reading("clipline.poller.polls", {**p.labels, "outcome": "ended"}) == 1

"""A poller look tries a failed retrieve again within itself (PollPolicy.look_tries): a 5xx or
a short 429 costs a fraction of a second, not the poll's backoff or a webhook sender's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from services.poller.app import build_router
from services.poller.domain import PollPolicy
from services.poller.ports import Deps
from shared.contracts import JobGeneratedV1, JobStatus
from shared.provider import ProviderNoAnswer, ProviderRateLimited, ProviderServerError
from tests.component.harness import running
from tests.component.support import actions, settled
from tests.component.test_poller import VIDEO, Poller, submitted_job
from tests.fakes import FakeProvider, FixedExpectations, upstream_video

POLICY = PollPolicy(
    default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3 * 3600.0, look_tries=3
)


@pytest.fixture
async def poller() -> AsyncIterator[Poller]:
    provider, expectations = FakeProvider(), FixedExpectations(0.0)
    deps = lambda f: Deps(f.jobs, f.emit, provider, POLICY, expectations)  # noqa: E731
    async with running(build_router(), deps) as h:
        yield Poller(h, provider, expectations)


async def test_a_5xx_and_a_lost_answer_are_tried_again_within_the_look(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves += [
        ProviderServerError("502", status=502),
        ProviderNoAnswer("GET: RemoteProtocolError"),
        (upstream_video(VIDEO, "completed", progress=100), None),
    ]
    await h.send(event)

    assert provider.retrieved == [VIDEO] * 3
    assert h.bus.one(JobGeneratedV1).job_id == event.job_id
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.GENERATED
    assert record.errors == {}  # recovered within the look: no error spent
    assert actions(h.outcomes(event)) == ["ack"]


async def test_a_short_429_is_waited_out_as_asked_then_looked_at_again(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves += [
        ProviderRateLimited("slow down", retry_after_seconds=0.3),
        (upstream_video(VIDEO, "completed", progress=100), None),
    ]
    began = time.monotonic()
    await h.send(event)

    assert time.monotonic() - began >= 0.3  # not sooner than the upstream asked
    assert provider.retrieved == [VIDEO] * 2
    assert h.jobs.records()[event.job_id].status == JobStatus.GENERATED


async def test_three_failures_end_the_look_as_before(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves += [ProviderServerError("500", status=500)] * 3
    await h.send(event)

    assert provider.retrieved == [VIDEO] * 3
    assert settled(h.outcomes(event)) == [("nak", 0.5)]  # the poll's error budget: retry_delay(1)
    assert h.jobs.records()[event.job_id].errors == {"poller": 1}


async def test_a_long_429_is_not_waited_out_within_the_look(poller: Poller) -> None:
    h, provider = poller.h, poller.provider
    event = submitted_job(poller)
    provider.retrieves.append(ProviderRateLimited("slow down", retry_after_seconds=12.0))
    await h.send(event)

    assert provider.retrieved == [VIDEO]
    assert settled(h.outcomes(event)) == [("nak", 12.0)]  # a durable timer, as asked

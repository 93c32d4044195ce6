"""The poller's held timers under TestNatsBroker with fakes: a `submitted` delivery left in a
delayed nak is acked when a webhook moves its job on, and that webhook needs neither the
upstream-index read nor a record read; a cancel meanwhile is still honoured, and a webhook for
a job this process does not hold goes through the index as before."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks import Webhook

from services.poller.app import build_router
from services.poller.domain import PollPolicy
from services.poller.held import HeldTimers
from services.poller.ports import Deps, WebhookDeps
from services.poller.webhooks import PATH, build_webhooks
from shared.contracts import (
    JobCancelledV1,
    JobGeneratedV1,
    JobRecordV1,
    JobStatus,
    JobSubmittedV1,
)
from shared.contracts.lifecycle import request_cancel
from shared.jobstore import Change
from shared.provider import ProviderRateLimited
from tests.component.harness import TENANT, Harness, job_record, new_job_id, running
from tests.component.support import settled
from tests.component.test_poller import submitted
from tests.fakes import (
    FakeProvider,
    FixedExpectations,
    InMemoryJobStore,
    InMemorySeenWebhooks,
    InMemoryUpstreamIndex,
    upstream_video,
)
from tests.webhook_signing import SECRET, event_body, signed

POLICY = PollPolicy(default_delay=60.0, min_delay=60.0, max_delay=60.0, deadline=3 * 3600.0)
VIDEO = "video_abc"  # as `submitted` (test_poller.py) names it
DURABLE = JobSubmittedV1.durable("poller")


class CountingJobStore(InMemoryJobStore):
    """InMemoryJobStore that counts its reads (`get`; an update's compare-and-set reads only
    when the record changed since the caller read it, which the fake does not model)."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self._updating = False

    async def get(self, tenant: str, job_id: str) -> JobRecordV1 | None:
        self.gets += not self._updating
        return await super().get(tenant, job_id)

    async def update(
        self, tenant: str, job_id: str, change: Change, *, fresh: bool = False
    ) -> JobRecordV1 | None:
        self._updating = True
        try:
            return await super().update(tenant, job_id, change, fresh=fresh)
        finally:
            self._updating = False


class CountingIndex(InMemoryUpstreamIndex):
    """InMemoryUpstreamIndex that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def owner(self, upstream_id: str) -> tuple[str, str] | None:
        self.reads += 1
        return await super().owner(upstream_id)


class ToldWithAHook(InMemorySeenWebhooks):
    """InMemorySeenWebhooks whose `told` (the `submitted` handling's early-webhook check) first
    runs `during`, if set: a webhook that comes while the delivery is being handled."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Callable[[], Awaitable[object]] | None = None

    async def told(self, video_id: str) -> bool:
        if self.during is not None:
            during, self.during = self.during, None
            await during()
        return await super().told(video_id)


@dataclass
class RecordingAcks:
    """TimerAcks that records the ack subjects it was asked to ack."""

    acked: list[str] = field(default_factory=list)

    async def ack(self, reply: str) -> None:
        self.acked.append(reply)


@dataclass
class Held:
    h: Harness
    seen: ToldWithAHook
    provider: FakeProvider
    jobs: CountingJobStore
    index: CountingIndex
    acks: RecordingAcks
    held: HeldTimers
    client: httpx.AsyncClient

    async def webhook(self, video: str = VIDEO) -> httpx.Response:
        body = event_body(video)
        return await self.client.post(PATH, content=body, headers=signed(body))

    def reads(self) -> tuple[int, int]:
        """(index reads, record reads) so far."""
        return self.index.reads, self.jobs.gets


@pytest.fixture
async def poller() -> AsyncIterator[Held]:
    """The poller with webhooks on: jobs expected done in 10 minutes, so a `submitted` waits in
    a delayed nak (held) until a webhook comes."""
    provider, seen, acks = FakeProvider(), ToldWithAHook(), RecordingAcks()
    jobs, index, held = CountingJobStore(), CountingIndex(), HeldTimers(acks)
    deps = lambda f: Deps(  # noqa: E731
        f.jobs, f.emit, provider, POLICY, FixedExpectations(600.0), early=seen, held=held
    )
    async with running(build_router(), deps, jobs=jobs) as h:
        api = build_webhooks(WebhookDeps(h.deps, index, seen, Webhook(SECRET)))
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
            yield Held(h, seen, provider, jobs, index, acks, held, client)


def a_submitted_job(p: Held) -> JobSubmittedV1:
    """A job `submitted` upstream as VIDEO, linked in the index; its `submitted` event."""
    job_id = new_job_id()
    p.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id=VIDEO, cost_micros=400_000))
    p.index.links[VIDEO] = (TENANT, job_id)
    return submitted(job_id)


def ack_subject_of(delivery: int) -> str:
    return f"$JS.ACK.CLIPLINE_JOBS.{DURABLE}.{delivery}."


async def test_a_webhook_for_a_held_job_reads_nothing_and_acks_its_poll(poller: Held) -> None:
    event = a_submitted_job(poller)
    await poller.h.send(event)
    assert [a for a, _ in settled(poller.h.outcomes(event))] == ["nak"]  # its durable timer
    assert len(poller.held) == 1
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    reads = poller.reads()

    response = await poller.webhook()

    assert response.json() == {"accepted": "looked", "job_id": event.job_id, "running": False}
    assert poller.reads() == reads  # no index read, no record read
    assert poller.provider.retrieved == [VIDEO]
    assert poller.h.bus.one(JobGeneratedV1).job_id == event.job_id
    assert poller.jobs.records()[event.job_id].status == JobStatus.GENERATED
    # The delivery waiting in its delayed nak is acked: JetStream redelivers nothing.
    assert len(poller.acks.acked) == 1
    assert poller.acks.acked[0].startswith(ack_subject_of(1))
    assert len(poller.held) == 0


async def test_a_cancel_between_submitted_and_the_webhook_is_honoured(poller: Held) -> None:
    """The held record is stale: the look's write finds the job cancelling, reads it again
    and ends it cancelled (the upstream video its sunk cost), as the indexed path does."""
    event = a_submitted_job(poller)
    await poller.h.send(event)
    record = poller.jobs.records()[event.job_id]
    poller.jobs.put(request_cancel(record, datetime.now(UTC)))  # the client cancels
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))

    response = await poller.webhook()

    assert response.json() == {
        "accepted": "not_followed",
        "job_id": event.job_id,
        "status": "cancelled",
    }
    assert poller.h.bus.events(JobGeneratedV1) == []
    cancelled = poller.h.bus.one(JobCancelledV1)
    assert (cancelled.job_id, cancelled.upstream_id) == (event.job_id, VIDEO)
    assert poller.jobs.records()[event.job_id].status == JobStatus.CANCELLED
    assert len(poller.acks.acked) == 1  # the job ended here: its poll is not needed


async def test_a_webhook_for_a_job_another_replica_holds_goes_through_the_index(
    poller: Held,
) -> None:
    """This process never had the job's `submitted` (another replica holds it): the webhook
    reads the index and the record, moves the job on, and acks nothing."""
    event = a_submitted_job(poller)
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))

    response = await poller.webhook()

    assert response.json() == {"accepted": "looked", "job_id": event.job_id, "running": False}
    assert poller.reads() == (1, 1)
    assert poller.h.bus.one(JobGeneratedV1).job_id == event.job_id
    assert poller.acks.acked == []
    # The other replica's poll comes due: it finds the job past following and stops.
    await poller.h.send(event, delivery=2)
    assert [a for a, _ in settled(poller.h.outcomes(event))] == ["ack"]
    assert poller.provider.retrieved == [VIDEO]


async def test_only_the_latest_delivery_is_acked(poller: Held) -> None:
    """The timer came due and the job waits again: the new delivery is the one held."""
    event = a_submitted_job(poller)
    await poller.h.send(event)
    await poller.h.send(event, delivery=2)
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))

    await poller.webhook()

    assert len(poller.acks.acked) == 1
    assert poller.acks.acked[0].startswith(ack_subject_of(2))


async def test_a_throttled_look_keeps_the_job_held_for_the_retry(poller: Held) -> None:
    event = a_submitted_job(poller)
    await poller.h.send(event)
    poller.provider.retrieves.append(ProviderRateLimited("slow down", retry_after_seconds=30.0))
    reads = poller.reads()

    first = await poller.webhook()
    assert first.status_code == 503
    assert poller.acks.acked == []
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    retry = await poller.webhook()

    assert retry.json()["accepted"] == "looked"
    assert poller.reads() == reads  # neither look read anything
    assert poller.h.bus.one(JobGeneratedV1).job_id == event.job_id
    assert len(poller.acks.acked) == 1


async def test_a_look_that_finds_the_video_running_reads_the_record_next_time(
    poller: Held,
) -> None:
    """Progress recorded by the look: the held record is stale, so the next webhook reads the
    record (through the index) and still acks the held poll when the job is done."""
    event = a_submitted_job(poller)
    await poller.h.send(event)
    poller.provider.retrieves.append((upstream_video(VIDEO, "in_progress", progress=50), None))
    assert (await poller.webhook()).json()["running"] is True
    assert poller.acks.acked == []
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    reads = poller.reads()

    done = await poller.webhook()

    assert done.json()["running"] is False
    assert poller.reads() == (reads[0] + 1, reads[1] + 1)
    assert poller.h.bus.one(JobGeneratedV1).job_id == event.job_id
    assert len(poller.acks.acked) == 1


async def test_a_webhook_for_a_held_job_already_generated_acks_its_poll(poller: Held) -> None:
    """Another replica's webhook recorded it: this look's write finds it so, announces the
    fact again (its id drops the repeat) and acks the held poll."""
    event = a_submitted_job(poller)
    await poller.h.send(event)
    record = poller.jobs.records()[event.job_id]
    poller.jobs.put(record.model_copy(update={"status": JobStatus.GENERATED}))
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))

    response = await poller.webhook()

    assert response.json() == {"accepted": "looked", "job_id": event.job_id, "running": False}
    assert poller.h.bus.one(JobGeneratedV1).job_id == event.job_id
    assert len(poller.acks.acked) == 1


async def test_a_webhook_while_the_delivery_is_handled_ends_it_with_an_ack(poller: Held) -> None:
    """The webhook comes after the handling read the record `submitted`, before it naks: the
    webhook (nothing held yet) goes through the index and moves the job on; the handling then
    acks its delivery instead of leaving it to wait a minute for nothing."""
    event = a_submitted_job(poller)
    poller.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    answers: list[httpx.Response] = []

    async def webhook() -> None:
        answers.append(await poller.webhook())

    poller.seen.during = webhook

    await poller.h.send(event)

    assert [r.json()["accepted"] for r in answers] == ["looked"]
    assert poller.h.bus.one(JobGeneratedV1).job_id == event.job_id
    assert [a for a, _ in settled(poller.h.outcomes(event))] == ["ack"]
    assert len(poller.held) == 0
    assert poller.acks.acked == []

"""storage with its stores backed up: the job whose upstream copy expires soonest is stored
next, whatever order the jobs were delivered in; work that stores nothing does not wait."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.contracts import JobCancelledV1, JobCompletedV1, JobGeneratedV1, JobRecordV1, JobStatus
from shared.jobstore import Change
from shared.provider.port import Download
from shared.provider.wire import Variant
from tests.component.harness import job_record, new_job_id
from tests.component.test_storage import (
    ASSETS,
    STEP,
    Storage,
    WatchedAssetStore,
    generated,
    storing_into,
)
from tests.fakes import FakeProvider, InMemoryJobStore

WAIT = 5.0
"""The longest a step may take (each takes milliseconds): a deadline, not a pause."""


@dataclass
class HeldProvider(FakeProvider):
    """FakeProvider whose downloads of a held video wait until it is released."""

    held: dict[str, asyncio.Event] = field(default_factory=dict)
    started: dict[str, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    began: list[str] = field(default_factory=list)

    @asynccontextmanager
    async def download(self, video_id: str, variant: Variant) -> AsyncIterator[Download]:
        self.began.append(video_id)
        self.started[video_id].set()
        if video_id in self.held:
            await self.held[video_id].wait()
        async with super().download(video_id, variant) as download:
            yield download

    def stored_order(self) -> list[str]:
        """The videos in the order their first download started (held or not)."""
        return list(dict.fromkeys(self.began))


class StoringNoted(InMemoryJobStore):
    """InMemoryJobStore that signals when a job is recorded `storing` (its handler then goes
    straight to the gate, without suspending on the way)."""

    def __init__(self) -> None:
        super().__init__()
        self.storing: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def update(
        self, tenant: str, job_id: str, change: Change, *, fresh: bool = False
    ) -> JobRecordV1 | None:
        new = await super().update(tenant, job_id, change, fresh=fresh)
        if new is not None and new.status == JobStatus.STORING:
            self.storing[job_id].set()
        return new


@dataclass
class Backlog:
    s: Storage
    provider: HeldProvider
    jobs: StoringNoted
    sends: list[asyncio.Task[None]] = field(default_factory=list)

    def job(
        self, video: str, expires_in: timedelta | None, status: JobStatus = JobStatus.GENERATED
    ) -> JobGeneratedV1:
        """A job of upstream `video` in `status` whose record says it expires in `expires_in`
        (None: says nothing); its `generated` event, with the record's copies of the facts."""
        job_id = new_job_id()
        expires_at = None if expires_in is None else datetime.now(UTC) + expires_in
        self.jobs.put(
            job_record(
                job_id, status, step=STEP, upstream_id=video, cost_micros=400_000,
                expires_at=expires_at,
            )
        )  # fmt: skip
        return generated(job_id).model_copy(update={"upstream_id": video, "expires_at": expires_at})

    async def deliver(self, event: JobGeneratedV1) -> None:
        """Deliver `event` (its handler runs on in a task); returns once it is recorded
        `storing`, so waiting at the gate or storing."""
        self.sends.append(asyncio.create_task(self.s.h.send(event)))
        await asyncio.wait_for(self.jobs.storing[event.job_id].wait(), WAIT)


@asynccontextmanager
async def backlog(concurrent_stores: int) -> AsyncIterator[Backlog]:
    provider = HeldProvider(assets=dict(ASSETS), chunk_size=5)
    jobs = StoringNoted()
    store = WatchedAssetStore("clipline-assets", jobs)
    async with storing_into(store, provider=provider, concurrent_stores=concurrent_stores) as s:
        b = Backlog(s, provider, jobs)
        try:
            yield b
        finally:
            for held in provider.held.values():
                held.set()
            await asyncio.wait_for(asyncio.gather(*b.sends), WAIT)


async def test_with_stores_backed_up_the_job_expiring_soonest_is_stored_next() -> None:
    async with backlog(concurrent_stores=1) as b:
        first = b.job("video_first", timedelta(minutes=55))
        b.provider.held["video_first"] = asyncio.Event()
        await b.deliver(first)
        await asyncio.wait_for(b.provider.started["video_first"].wait(), WAIT)  # the one slot
        later = b.job("video_later", timedelta(minutes=50))
        unknown = b.job("video_unknown", None)  # an hour after its generation, ~12 s ago
        sooner = b.job("video_sooner", timedelta(minutes=40))
        soonest = b.job("video_soonest", timedelta(minutes=5))
        for event in (later, unknown, sooner, soonest):  # delivered in this order
            await b.deliver(event)
        assert b.provider.stored_order() == ["video_first"]  # the others wait their turn

        b.provider.held["video_first"].set()
        await asyncio.wait_for(asyncio.gather(*b.sends), WAIT)

    assert b.provider.stored_order() == [
        "video_first", "video_soonest", "video_sooner", "video_later", "video_unknown",
    ]  # fmt: skip
    completed = {e.job_id for e in b.s.h.bus.events(JobCompletedV1)}
    assert completed == {e.job_id for e in (first, later, unknown, sooner, soonest)}


async def test_two_slots_store_two_jobs_at_once_and_the_next_by_expiry() -> None:
    async with backlog(concurrent_stores=2) as b:
        for video in ("video_a", "video_b"):
            b.provider.held[video] = asyncio.Event()
            await b.deliver(b.job(video, timedelta(minutes=55)))
        await b.deliver(b.job("video_far", timedelta(minutes=50)))
        await b.deliver(b.job("video_near", timedelta(minutes=10)))
        await asyncio.wait_for(b.provider.started["video_b"].wait(), WAIT)
        assert b.provider.stored_order() == ["video_a", "video_b"]

        b.provider.held["video_b"].set()  # one slot frees: the nearer expiry takes it
        await asyncio.wait_for(b.provider.started["video_near"].wait(), WAIT)
        assert b.provider.stored_order() == ["video_a", "video_b", "video_near"]


async def test_a_completed_job_redelivered_does_not_wait_for_a_store_slot() -> None:
    async with backlog(concurrent_stores=1) as b:
        b.provider.held["video_busy"] = asyncio.Event()
        await b.deliver(b.job("video_busy", timedelta(minutes=30)))
        await asyncio.wait_for(b.provider.started["video_busy"].wait(), WAIT)
        done = b.job("video_done", timedelta(minutes=30), JobStatus.COMPLETED)

        await asyncio.wait_for(b.s.h.send(done, delivery=2), WAIT)  # while the slot is taken

        assert b.s.h.bus.one(JobCompletedV1).job_id == done.job_id
        assert b.provider.stored_order() == ["video_busy"]


async def test_a_job_cancelled_while_it_waits_for_a_slot_is_never_fetched() -> None:
    async with backlog(concurrent_stores=1) as b:
        b.provider.held["video_busy"] = asyncio.Event()
        await b.deliver(b.job("video_busy", timedelta(minutes=30)))
        await asyncio.wait_for(b.provider.started["video_busy"].wait(), WAIT)
        waiting = b.job("video_waiting", timedelta(minutes=30))
        await b.deliver(waiting)  # recorded storing, now waiting for the slot

        def cancelling(record: JobRecordV1 | None) -> JobRecordV1 | None:
            assert record is not None
            return record.model_copy(update={"status": JobStatus.CANCELLING})

        await b.jobs.update(waiting.tenant, waiting.job_id, cancelling)  # asked to cancel
        b.provider.held["video_busy"].set()
        await asyncio.wait_for(asyncio.gather(*b.sends), WAIT)

    assert b.provider.stored_order() == ["video_busy"]  # the cancelled one was never fetched
    assert b.jobs.records()[waiting.job_id].status == JobStatus.CANCELLED
    assert b.s.h.bus.one(JobCancelledV1).job_id == waiting.job_id
    assert waiting.job_id not in {e.job_id for e in b.s.h.bus.events(JobCompletedV1)}

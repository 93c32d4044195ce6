"""storage with CLIPLINE_DELETE_UPSTREAM_AFTER_STORE: the upstream's copy is deleted once the job
is recorded completed; a failed delete is logged and never fails the job."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from services.storage.app import build_router
from services.storage.ports import Deps
from shared.contracts import JobCompletedV1, JobStatus
from shared.provider import ProviderNotFound, ProviderUnavailable
from tests.component.harness import TENANT, Harness, running
from tests.component.support import actions
from tests.component.test_storage import ASSETS, VIDEO, Storage, WatchedAssetStore, generated_job
from tests.fakes import FakeProvider, InMemoryJobStore


@dataclass
class WatchedProvider(FakeProvider):
    """FakeProvider noting the job's recorded status at each delete."""

    jobs: InMemoryJobStore | None = None
    job_id: str = ""
    status_at_delete: list[JobStatus | None] = field(default_factory=list)

    async def delete(self, video_id: str) -> None:
        assert self.jobs is not None
        record = await self.jobs.get(TENANT, self.job_id)
        self.status_at_delete.append(record.status if record else None)
        await super().delete(video_id)


async def storage_with(delete_upstream: bool) -> AsyncIterator[tuple[Storage, WatchedProvider]]:
    jobs = InMemoryJobStore()
    provider = WatchedProvider(assets=dict(ASSETS), chunk_size=5, jobs=jobs)
    store = WatchedAssetStore("clipline-assets", jobs)
    router = build_router(3)
    deps = lambda f: Deps(f.jobs, f.emit, provider, store, delete_upstream=delete_upstream)  # noqa: E731
    async with running(router, deps, jobs=jobs) as h:
        yield Storage(h, provider, store), provider


@pytest.fixture
async def deleting() -> AsyncIterator[tuple[Storage, WatchedProvider]]:
    async for pair in storage_with(delete_upstream=True):
        yield pair


@pytest.fixture
async def keeping() -> AsyncIterator[tuple[Storage, WatchedProvider]]:
    async for pair in storage_with(delete_upstream=False):
        yield pair


async def completes(s: Storage, provider: WatchedProvider, *, deliveries: int = 1) -> Harness:
    event = generated_job(s)
    provider.job_id = event.job_id
    for n in range(1, deliveries + 1):
        await s.h.send(event, delivery=n)
    assert s.h.jobs.records()[event.job_id].status == JobStatus.COMPLETED
    assert actions(s.h.outcomes(event)) == ["ack"] * deliveries
    return s.h


async def test_upstream_copy_is_deleted_after_the_job_is_recorded_completed(
    deleting: tuple[Storage, WatchedProvider],
) -> None:
    s, provider = deleting
    h = await completes(s, provider)
    assert provider.deleted == [VIDEO]
    assert provider.status_at_delete == [JobStatus.COMPLETED]
    assert len(h.bus.events(JobCompletedV1)) == 1


async def test_upstream_copy_is_kept_by_default(keeping: tuple[Storage, WatchedProvider]) -> None:
    s, provider = keeping
    await completes(s, provider)
    assert provider.deleted == []


@pytest.mark.parametrize(
    "error",
    [ProviderUnavailable("503 from upstream", status=503), RuntimeError("a bug in the adapter")],
)
async def test_a_failed_delete_is_logged_and_the_job_stays_completed(
    deleting: tuple[Storage, WatchedProvider],
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    s, provider = deleting
    provider.delete_errors.append(error)
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        h = await completes(s, provider)
    assert provider.deleted == [VIDEO]
    assert len(h.bus.events(JobCompletedV1)) == 1
    assert any("could not delete upstream" in r.getMessage() for r in caplog.records)


async def test_a_redelivery_deletes_again_and_a_404_is_fine(
    deleting: tuple[Storage, WatchedProvider], caplog: pytest.LogCaptureFixture
) -> None:
    s, provider = deleting
    provider.delete_errors.append(ProviderUnavailable("reset", status=None))  # first: fails
    provider.delete_errors.append(ProviderNotFound("gone", status=404))  # second: already gone
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        h = await completes(s, provider, deliveries=2)
    assert provider.deleted == [VIDEO, VIDEO]
    assert provider.status_at_delete == [JobStatus.COMPLETED] * 2
    assert len(provider.downloaded) == 3  # stored once
    assert sum("could not delete" in r.getMessage() for r in caplog.records) == 1  # not the 404
    first, second = h.bus.events(JobCompletedV1)
    assert first.event_id == second.event_id

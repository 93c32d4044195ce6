"""storage under TestNatsBroker: every variant streamed to the asset store, then completed."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.storage.app import build_router
from services.storage.domain import CONCURRENT_STORES
from services.storage.gate import PriorityGate
from services.storage.ports import Deps, Stored, StoreUnavailable
from shared.contracts import JobCompletedV1, JobFailedV1, JobGeneratedV1, JobStatus
from shared.contracts.ids import fact_event_id
from shared.provider import ProviderNotFound, ProviderUnavailable
from shared.provider.wire import Variant
from tests.component.harness import TENANT, Harness, job_record, new_event_id, new_job_id, running
from tests.component.support import actions, settled
from tests.fakes import FakeProvider, InMemoryAssetStore, InMemoryJobStore

VIDEO = "video_abc"
ASSETS: dict[Variant, bytes] = {
    "video": b"\x00\x00\x00\x18ftypmp42 pretend this is H.264",
    "thumbnail": b"RIFF\x10\x00\x00\x00WEBPVP8 thumb",
    "spritesheet": b"\xff\xd8\xff\xe0 sprites",
}
EXPECTED: dict[Variant, tuple[str, str]] = {
    "video": ("video.mp4", "video/mp4"),
    "thumbnail": ("thumbnail.webp", "image/webp"),
    "spritesheet": ("spritesheet.jpg", "image/jpeg"),
}
STEP = timedelta(seconds=2)


class WatchedAssetStore(InMemoryAssetStore):
    """InMemoryAssetStore noting the job's recorded status when each upload starts."""

    def __init__(self, bucket: str, jobs: InMemoryJobStore) -> None:
        super().__init__(bucket)
        self.jobs = jobs
        self.status_at_put: list[JobStatus | None] = []

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
        *,
        length: int | None = None,
    ) -> Stored:
        tenant, *_, job_id, _ = key.split("/")
        record = await self.jobs.get(tenant, job_id)
        self.status_at_put.append(record.status if record else None)
        return await super().put_stream(key, chunks, content_type, metadata)


@dataclass
class Storage:
    h: Harness
    provider: FakeProvider
    store: WatchedAssetStore


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    async with storing_into(WatchedAssetStore("clipline-assets", InMemoryJobStore())) as s:
        yield s


@asynccontextmanager
async def storing_into(
    store: WatchedAssetStore,
    *,
    provider: FakeProvider | None = None,
    concurrent_stores: int = CONCURRENT_STORES,
) -> AsyncIterator[Storage]:
    """A storage service writing into `store` (whose job store it shares), downloading from
    `provider` (a FakeProvider of ASSETS unless given)."""
    upstream = provider or FakeProvider(assets=dict(ASSETS), chunk_size=5)
    gate = PriorityGate(concurrent_stores)
    deps = lambda f: Deps(f.jobs, f.emit, upstream, store, gate=gate)  # noqa: E731
    router = build_router(3, concurrent_stores=concurrent_stores)
    async with running(router, deps, jobs=store.jobs) as h:
        yield Storage(h, upstream, store)


def generated(job_id: str) -> JobGeneratedV1:
    return JobGeneratedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        upstream_id=VIDEO, cost_micros=400_000,
    )  # fmt: skip


def generated_job(
    s: Storage, status: JobStatus = JobStatus.GENERATED, expires_at: datetime | None = None
) -> JobGeneratedV1:
    """A job in `status` whose record says its upstream copy expires at `expires_at`; its
    `generated` event (with the record's copies of the facts)."""
    job_id = new_job_id()
    record = job_record(
        job_id, status, step=STEP, upstream_id=VIDEO, cost_micros=400_000, expires_at=expires_at
    )
    s.h.jobs.put(record)
    return generated(job_id).model_copy(update={"expires_at": expires_at})


async def test_generated_job_is_stored_and_completed(storage: Storage) -> None:
    h, store = storage.h, storage.store
    event = generated_job(storage)
    before = await h.jobs.get(TENANT, event.job_id)
    assert before is not None
    await h.send(event)

    accepted = before.history["accepted"].astimezone(UTC)
    prefix = f"{TENANT}/{accepted:%Y/%m/%d}/{event.job_id}/"
    assert set(store.objects) == {prefix + name for name, _ in EXPECTED.values()}
    for variant, (name, content_type) in EXPECTED.items():
        stored = store.objects[prefix + name]
        assert stored.data == ASSETS[variant]
        assert stored.content_type == content_type
        assert stored.metadata == {
            "job-id": event.job_id,
            "tenant": TENANT,
            "model": before.spec.model,
            "size": before.spec.size,
            "seconds": str(before.spec.seconds),
            "prompt-sha256": hashlib.sha256(before.spec.prompt.encode()).hexdigest(),
            "cost-micros": "400000",
        }
    assert sorted(storage.provider.downloaded) == sorted((VIDEO, v) for v in EXPECTED)

    completed = h.bus.one(JobCompletedV1)
    assert completed.event_id == fact_event_id(event.job_id, "completed")
    assert completed.upstream_id == VIDEO
    assert completed.cost_micros == 400_000
    assert [a.variant for a in completed.assets] == list(EXPECTED)
    for asset in completed.assets:
        data = ASSETS[asset.variant]
        assert asset.bucket == "clipline-assets"
        assert asset.key == prefix + EXPECTED[asset.variant][0]
        assert asset.content_type == EXPECTED[asset.variant][1]
        assert asset.size_bytes == len(data)
        assert asset.sha256 == hashlib.sha256(data).hexdigest()

    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.COMPLETED
    # the record keeps the assets; their presigned URLs (credentials) are only in the event
    assert [a.url for a in record.assets] == [None] * 3
    assert record.assets == [a.model_copy(update={"url": None}) for a in completed.assets]
    for asset in completed.assets:
        assert asset.url == f"https://s3.test/clipline-assets/{asset.key}?X-Amz-Signature=fake"
    assert record.history["generated"] < record.history["storing"] <= record.history["completed"]
    timings = completed.timings
    assert timings.accepted_at == before.history["accepted"]
    assert timings.submitted_at == before.history["submitted"]
    assert timings.generated_at == before.history["generated"]
    assert timings.completed_at == record.history["completed"]
    assert timings.queue_seconds == (2 * STEP).total_seconds()  # accepted -> admitted -> submitted
    assert timings.generation_seconds == (2 * STEP).total_seconds()
    assert timings.storage_seconds is not None
    assert timings.storage_seconds > 0
    assert actions(h.outcomes(event)) == ["ack"]


async def test_redelivered_generated_reemits_the_same_completion(storage: Storage) -> None:
    h = storage.h
    event = generated_job(storage)
    await h.send(event)
    await h.send(event, delivery=2)

    first, second = h.bus.events(JobCompletedV1)
    # same id, assets and timings (only occurred_at differs): JetStream drops the duplicate
    assert first.model_dump(exclude={"occurred_at"}) == second.model_dump(exclude={"occurred_at"})
    assert h.jobs.writes == [event.job_id] * 2  # `storing`, then `completed`, once each
    assert len(storage.provider.downloaded) == 3  # nothing downloaded or stored again


async def test_storing_is_recorded_before_any_upload(storage: Storage) -> None:
    event = generated_job(storage)
    await storage.h.send(event)

    assert storage.store.status_at_put == [JobStatus.STORING] * 3


async def test_job_left_storing_is_stored_again_and_completed(storage: Storage) -> None:
    h = storage.h
    event = generated_job(storage, JobStatus.STORING)  # a crash mid-upload
    await h.send(event, delivery=2)

    assert len(storage.store.objects) == 3
    assert h.bus.one(JobCompletedV1).event_id == fact_event_id(event.job_id, "completed")
    assert h.jobs.records()[event.job_id].status == JobStatus.COMPLETED


async def test_missing_upstream_assets_fail_the_job(storage: Storage) -> None:
    h = storage.h
    storage.provider.download_errors["thumbnail"] = ProviderNotFound("expired", status=404)
    event = generated_job(storage)
    await h.send(event)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "assets_unavailable"
    assert failed.detail == "expired"
    assert failed.stage == "storage"
    assert failed.upstream_id == VIDEO
    assert failed.event_id == fact_event_id(event.job_id, "failed")
    assert h.bus.events(JobCompletedV1) == []
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED
    assert actions(h.outcomes(event)) == ["ack"]


async def test_transient_download_error_is_retried_not_failed(storage: Storage) -> None:
    h = storage.h
    storage.provider.download_errors["thumbnail"] = ProviderUnavailable("reset", status=None)
    event = generated_job(storage)
    await h.send(event)

    assert settled(h.outcomes(event)) == [("nak", 0.5)]
    assert h.bus.events(JobFailedV1) == []
    assert h.bus.events(JobCompletedV1) == []
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.STORING  # the next delivery stores again
    assert record.errors == {"storage": 1}


async def test_spent_error_budget_fails_the_job(storage: Storage) -> None:
    h = storage.h
    storage.provider.download_errors["video"] = ProviderUnavailable("reset", status=None)
    job_id = new_job_id()
    h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO, errors={"storage": 2}))
    event = generated(job_id)
    await h.send(event, delivery=3)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "retries_exhausted"
    assert failed.stage == "storage"
    assert h.jobs.records()[job_id].status == JobStatus.FAILED
    assert actions(h.outcomes(event)) == ["term"]


@pytest.mark.parametrize(
    "status",
    [JobStatus.FAILED, JobStatus.REJECTED, JobStatus.TIMED_OUT, JobStatus.CANCELLED],
)
async def test_ended_job_is_not_stored(storage: Storage, status: JobStatus) -> None:
    h = storage.h
    event = generated_job(storage, status)
    await h.send(event)

    assert storage.provider.downloaded == []
    assert storage.store.objects == {}
    assert h.bus.kinds() == ["generated"]


async def test_unknown_job_is_not_stored(storage: Storage) -> None:
    await storage.h.send(generated(new_job_id()))

    assert storage.provider.downloaded == []
    assert storage.h.bus.kinds() == ["generated"]


async def test_variants_are_stored_concurrently() -> None:
    class Gate(WatchedAssetStore):
        """Each upload waits until all three have started: only concurrent uploads finish."""

        def __init__(self, bucket: str, jobs: InMemoryJobStore) -> None:
            super().__init__(bucket, jobs)
            self.started = 0
            self.all_started = asyncio.Event()

        async def put_stream(
            self,
            key: str,
            chunks: AsyncIterator[bytes],
            content_type: str,
            metadata: Mapping[str, str],
            *,
            length: int | None = None,
        ) -> Stored:
            self.started += 1
            if self.started == len(EXPECTED):
                self.all_started.set()
            await asyncio.wait_for(self.all_started.wait(), 2)
            return await super().put_stream(key, chunks, content_type, metadata)

    store = Gate("clipline-assets", InMemoryJobStore())
    async with storing_into(store) as running_storage:
        h = running_storage.h
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO, cost_micros=400_000))
        await h.send(generated(job_id))

    assert store.started == len(EXPECTED)
    assert h.jobs.records()[job_id].status == JobStatus.COMPLETED


async def test_truncated_download_is_retried_and_only_it_is_fetched_again(
    storage: Storage,
) -> None:
    h, store, provider = storage.h, storage.store, storage.provider
    provider.truncations["video"] = [7]  # the first download of the video breaks at byte 7
    event = generated_job(storage)
    await h.send(event)

    assert settled(h.outcomes(event)) == [("nak", 0.5)]  # a counted error, retried
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.STORING
    assert record.errors == {"storage": 1}
    assert sorted(a.variant for a in record.assets) == ["spritesheet", "thumbnail"]
    assert not any(key.endswith("video.mp4") for key in store.objects)  # nothing half-stored
    assert h.bus.events(JobCompletedV1) == []

    provider.downloaded.clear()
    await h.send(event, delivery=2)

    assert provider.downloaded == [(VIDEO, "video")]  # the others were kept, not fetched again
    completed = h.bus.one(JobCompletedV1)
    assert [a.variant for a in completed.assets] == list(EXPECTED)
    for asset in completed.assets:
        data = ASSETS[asset.variant]
        assert store.objects[asset.key].data == data
        assert asset.size_bytes == len(data)
        assert asset.sha256 == hashlib.sha256(data).hexdigest()
    assert h.jobs.records()[event.job_id].status == JobStatus.COMPLETED


async def test_a_recorded_variant_gone_from_s3_is_fetched_again(storage: Storage) -> None:
    h, store, provider = storage.h, storage.store, storage.provider
    provider.truncations["thumbnail"] = [3]
    event = generated_job(storage)
    await h.send(event)
    kept = h.jobs.records()[event.job_id].assets
    video = next(a for a in kept if a.variant == "video")
    await store.delete(video.key)  # e.g. removed by hand meanwhile

    provider.downloaded.clear()
    await h.send(event, delivery=2)

    assert sorted(v for _, v in provider.downloaded) == ["thumbnail", "video"]
    assert store.objects[video.key].data == ASSETS["video"]
    assert h.jobs.records()[event.job_id].status == JobStatus.COMPLETED


async def test_s3_down_waits_without_spending_the_error_budget(storage: Storage) -> None:
    h, store = storage.h, storage.store
    store.down = True
    event = generated_job(storage, expires_at=datetime.now(UTC) + timedelta(minutes=30))
    await h.send(event)
    await h.send(event, delivery=2)

    outcomes = settled(h.outcomes(event))
    assert [action for action, _ in outcomes] == ["nak", "nak"]  # a delayed redelivery each
    assert all(delay is not None and 1.0 <= delay <= 30.0 for _, delay in outcomes)
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.STORING
    assert record.errors == {}  # waiting for S3 is not an error
    assert h.bus.events(JobFailedV1) == []

    store.down = False  # S3 is back
    await h.send(event, delivery=3)

    assert h.bus.one(JobCompletedV1).job_id == event.job_id
    assert len(store.objects) == 3


async def test_s3_down_past_the_upstream_expiry_fails_asset_expired(storage: Storage) -> None:
    h = storage.h
    storage.store.down = True
    expired = datetime.now(UTC) - timedelta(seconds=1)
    event = generated_job(storage, expires_at=expired)
    await h.send(event)

    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "asset_expired"
    assert failed.stage == "storage"
    assert failed.upstream_id == VIDEO
    assert "S3 was unreachable" in failed.detail
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED
    assert actions(h.outcomes(event)) == ["ack"]


async def test_s3_down_for_one_variant_keeps_the_others(storage: Storage) -> None:
    class DownForVideos(WatchedAssetStore):
        async def put_stream(
            self,
            key: str,
            chunks: AsyncIterator[bytes],
            content_type: str,
            metadata: Mapping[str, str],
            *,
            length: int | None = None,
        ) -> Stored:
            if key.endswith(".mp4"):
                raise StoreUnavailable("S3 unreachable: ReadTimeoutError")
            return await super().put_stream(key, chunks, content_type, metadata)

    async with storing_into(DownForVideos("clipline-assets", InMemoryJobStore())) as down:
        h = down.h
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO, cost_micros=400_000))
        event = generated(job_id)
        await h.send(event)

    assert [action for action, _ in settled(h.outcomes(event))] == ["nak"]
    record = h.jobs.records()[job_id]
    assert record.errors == {}
    assert sorted(a.variant for a in record.assets) == ["spritesheet", "thumbnail"]


async def test_presigned_urls_are_never_logged(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    event = generated_job(storage)
    await storage.h.send(event)

    assert all(a.url for a in storage.h.bus.one(JobCompletedV1).assets)
    assert "X-Amz-Signature" not in caplog.text

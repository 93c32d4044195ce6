"""storage handlers: stream every variant into S3, then emit the completion event."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from faststream.nats.annotations import NatsMessage

from services.storage.domain import CONTENT_TYPES, object_key, timings
from services.storage.ports import AssetStore
from shared.contracts import (
    AssetRef,
    JobCompletedV1,
    JobGeneratedV1,
    JobRecordV1,
    JobStatus,
    JobTimings,
)
from shared.messaging import ServiceRouter, heartbeat
from shared.provider import ProviderNotFound, ProviderRejected, VideoProvider
from shared.provider.wire import VARIANTS, Variant
from shared.runtime import Runtime

SERVICE = "storage"


def build_router(
    rt: Runtime, provider: VideoProvider, store: AssetStore, max_attempts: int
) -> ServiceRouter:
    router = rt.router()

    async def store_variant(event: JobGeneratedV1, variant: Variant) -> AssetRef:
        key = object_key(event.tenant, event.job_id, variant)
        async with provider.download(event.upstream_id, variant) as download:
            stored = await store.put_stream(key, download.chunks, CONTENT_TYPES[variant])
        return AssetRef(variant=variant, content_type=CONTENT_TYPES[variant], **asdict(stored))

    @router.on(JobGeneratedV1, max_errors=max_attempts, ack_wait=120.0, max_workers=4)
    async def on_job_generated(event: JobGeneratedV1, msg: NatsMessage) -> None:
        record = await rt.jobs.get(event.job_id)
        if record is None:
            return
        if record.status == JobStatus.COMPLETED:
            await rt.emit(completed(event, record))  # redelivered: announce, store nothing again
            return
        if record.terminal:
            return
        try:
            async with heartbeat(msg):  # a long upload must not look like a dead consumer
                assets = [await store_variant(event, v) for v in VARIANTS]
        except (ProviderNotFound, ProviderRejected) as exc:
            await rt.fail(
                job_id=event.job_id, tenant=event.tenant, cause_id=event.event_id,
                reason="assets_unavailable", detail=exc.message, stage=SERVICE,
                upstream_id=event.upstream_id,
            )  # fmt: skip
            return
        done = await rt.advance(event.job_id, JobStatus.COMPLETED, assets=assets)
        if done is not None:
            await rt.emit(completed(event, done))

    return router


def completed(event: JobGeneratedV1, record: JobRecordV1) -> JobCompletedV1:
    """The completion event, built from the stored record (the same on every redelivery)."""
    history = record.history
    finished = history.get(JobStatus.COMPLETED.value, datetime.now(UTC))
    return JobCompletedV1.caused_by(
        event,
        upstream_id=event.upstream_id,
        assets=record.assets,
        cost_micros=record.cost_micros if record.cost_micros is not None else event.cost_micros,
        timings=JobTimings(**asdict(timings(history, finished))),
    )

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
    JobFailedV1,
    JobGeneratedV1,
    JobStatus,
    JobTimings,
    transition,
)
from shared.messaging import ServiceRouter
from shared.provider import ProviderNotFound, ProviderRejected, VideoProvider
from shared.provider.wire import VARIANTS, Variant
from shared.runtime import Runtime

SERVICE = "storage"


def build_router(
    rt: Runtime, provider: VideoProvider, store: AssetStore, max_attempts: int
) -> ServiceRouter:
    router = rt.router()

    async def store_variant(event: JobGeneratedV1, variant: Variant, msg: NatsMessage) -> AssetRef:
        key = object_key(event.tenant, event.job_id, variant)
        async with provider.download(event.upstream_id, variant) as download:
            await msg.in_progress()  # a long upload must not look like a dead consumer
            stored = await store.put_stream(key, download.chunks, CONTENT_TYPES[variant])
        return AssetRef(variant=variant, content_type=CONTENT_TYPES[variant], **asdict(stored))

    @router.on(JobGeneratedV1, max_deliver=max_attempts, ack_wait=300.0, max_workers=4)
    async def on_job_generated(event: JobGeneratedV1, msg: NatsMessage) -> None:
        record = await rt.jobs.get(event.job_id)
        if record is None or (record.terminal and record.status != JobStatus.COMPLETED):
            return
        try:
            assets = [await store_variant(event, v, msg) for v in VARIANTS]
        except (ProviderNotFound, ProviderRejected) as exc:
            reason, detail = "assets_unavailable", exc.message
            now = datetime.now(UTC)
            await rt.jobs.update(
                event.job_id,
                lambda r: r and transition(r, JobStatus.FAILED, now, reason=reason, detail=detail),
            )
            await rt.emit(
                JobFailedV1.caused_by(
                    event, reason=reason, detail=detail, stage=SERVICE,
                    upstream_id=event.upstream_id,
                )
            )  # fmt: skip
            return
        now = datetime.now(UTC)
        stored = await rt.jobs.update(
            event.job_id,
            lambda r: r and transition(r, JobStatus.COMPLETED, now, assets=assets),
        )
        final = stored or await rt.jobs.get(event.job_id) or record
        history = final.history
        await rt.emit(
            JobCompletedV1.caused_by(
                event,
                upstream_id=event.upstream_id,
                assets=assets,
                cost_micros=event.cost_micros,
                timings=JobTimings(**asdict(timings(history, history.get("completed", now)))),
            )
        )

    return router

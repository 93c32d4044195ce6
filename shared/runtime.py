"""Process plumbing shared by the services: broker and middlewares, KV access, HTTP serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
import uvicorn
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from shared import telemetry
from shared.config import CommonSettings
from shared.contracts.events import JobFailedV1
from shared.contracts.ids import derived_event_id
from shared.contracts.jobs import JobRecordV1, JobStatus, count_error, transition
from shared.inputs import InputStore, ObjectInputStore
from shared.jobstore import JobStore, KvJobStore
from shared.messaging import Consumer, Emit, ServiceRouter, broker_emitter, retry_middleware
from shared.streams import INPUTS_BUCKET, JOBS_BUCKET, ensure_jetstream

log = logging.getLogger("clipline.runtime")


@dataclass
class Runtime:
    """What every service's wiring gets: a broker, an emitter, the job store and input images."""

    service: str
    broker: NatsBroker
    emit: Emit
    jobs: JobStore
    inputs: InputStore
    consumers: dict[str, Consumer] = field(default_factory=dict)

    def router(self) -> ServiceRouter:
        """A router whose consumer limits the retry middleware knows about."""
        return ServiceRouter(self.service, self.consumers)

    async def advance(self, job_id: str, status: JobStatus, **changes: Any) -> JobRecordV1 | None:
        """Move the job to `status`. Returns the record when the job is now at `status` (by this
        call or an earlier delivery of the same event), None when it is elsewhere: then the
        caller must not announce the step again (the job went on, or ended)."""
        now = datetime.now(UTC)
        applied = await self.jobs.update(
            job_id, lambda r: r and transition(r, status, now, **changes)
        )
        if applied is not None:
            return applied
        current = await self.jobs.get(job_id)
        return current if current is not None and current.status == status else None

    async def count_error(self, job_id: str, stage: str) -> int | None:
        updated = await self.jobs.update(job_id, lambda r: r and count_error(r, stage))
        return updated.errors[stage] if updated else None

    async def fail(
        self,
        *,
        job_id: str,
        tenant: str,
        cause_id: str,
        reason: str,
        detail: str,
        stage: str,
        upstream_id: str | None = None,
    ) -> None:
        """End the job as failed: record first, then the event (unless it already ended)."""
        record = await self.advance(job_id, JobStatus.FAILED, reason=reason, detail=detail)
        if record is None and await self.jobs.get(job_id) is not None:
            return  # completed or rejected meanwhile: nothing to fail
        if record is not None and record.reason != reason:
            return  # it had already failed for another reason, which was announced then
        await self.emit(
            JobFailedV1(
                event_id=derived_event_id(cause_id, "failed", stage),
                occurred_at=datetime.now(UTC),
                job_id=job_id,
                tenant=tenant,
                reason=reason,
                detail=detail,
                stage=stage,
                upstream_id=upstream_id,
            )
        )


def make_runtime(service: str, nats_url: str, tracer_provider: TracerProvider) -> Runtime:
    """Build (not connect) the broker with telemetry and the house retry policy."""
    consumers: dict[str, Consumer] = {}
    runtime_ref: list[Runtime] = []

    class LateFailures:
        """The middleware is built with the broker, before the Runtime that implements it."""

        async def count_error(self, job_id: str, stage: str) -> int | None:
            return await runtime_ref[0].count_error(job_id, stage)

        async def fail(self, **kwargs: Any) -> None:
            await runtime_ref[0].fail(**kwargs)

    broker = NatsBroker(
        nats_url,
        middlewares=[
            NatsTelemetryMiddleware(tracer_provider=tracer_provider),
            retry_middleware(service, consumers, LateFailures()),
        ],
        max_reconnect_attempts=-1,
    )
    kv_cache: list[KeyValue] = []

    async def jobs_kv() -> KeyValue:
        if not kv_cache:
            kv_cache.append(await broker.key_value(JOBS_BUCKET, declare=False))
        return kv_cache[0]

    obs_cache: list[ObjectStore] = []

    async def inputs_obs() -> ObjectStore:
        if not obs_cache:
            obs_cache.append(await broker.object_storage(INPUTS_BUCKET, declare=False))
        return obs_cache[0]

    runtime = Runtime(
        service,
        broker,
        broker_emitter(broker),
        KvJobStore(jobs_kv),
        ObjectInputStore(inputs_obs),
        consumers,
    )
    runtime_ref.append(runtime)
    return runtime


async def provision(nats_url: str) -> None:
    """Declare the stream and buckets before any consumer starts (idempotent)."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        await ensure_jetstream(nc.jetstream())
    finally:
        await nc.close()


def make_asgi(runtime: Runtime, routes: Sequence[tuple[str, object]] = ()) -> AsgiFastStream:
    """The service's ASGI app: broker lifecycle, GET /healthz (204 when NATS answers), extras."""
    return AsgiFastStream(
        runtime.broker,
        asgi_routes=[("/healthz", make_ping_asgi(runtime.broker, timeout=2.0)), *routes],  # type: ignore[list-item]
    )


async def serve(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Run an ASGI app under uvicorn until SIGTERM/SIGINT."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    await uvicorn.Server(config).serve()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@asynccontextmanager
async def service_runtime(service: str, settings: CommonSettings) -> AsyncIterator[Runtime]:
    """Entry-point set-up for a service process: logging, global tracing, streams, runtime."""
    configure_logging(settings.log_level)
    provider = telemetry.make_tracer_provider(service)
    telemetry.install(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    await provision(settings.nats_url)
    try:
        yield make_runtime(service, settings.nats_url, provider)
    finally:
        provider.shutdown()


async def serve_app(app: Any, settings: CommonSettings) -> None:
    await serve(app, settings.http_host, settings.http_port, settings.log_level)

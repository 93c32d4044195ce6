"""Process plumbing shared by the services: broker and middlewares, KV access, HTTP serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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
from shared.contracts.events import Event
from shared.inputs import InputStore, ObjectInputStore
from shared.jobstore import JobStore, KvJobStore
from shared.messaging import Consumer, Emit, ServiceRouter, broker_emitter, retry_middleware
from shared.streams import INPUTS_BUCKET, JOBS_BUCKET, ensure_jetstream

log = logging.getLogger("clipline.runtime")


@dataclass
class Runtime:
    """What every service's wiring gets: a broker, an emitter and the job store."""

    service: str
    broker: NatsBroker
    emit: Emit
    jobs: JobStore
    inputs: InputStore
    consumers: dict[str, Consumer] = field(default_factory=dict)

    def router(self) -> ServiceRouter:
        """A router whose consumer limits the retry middleware knows about."""
        return ServiceRouter(self.service, self.consumers)


def make_runtime(service: str, nats_url: str, tracer_provider: TracerProvider) -> Runtime:
    """Build (not connect) the broker with telemetry and the house retry policy."""
    consumers: dict[str, Consumer] = {}
    emit_ref: list[Emit] = []

    async def emit_later(event: Event) -> None:
        await emit_ref[0](event)

    broker = NatsBroker(
        nats_url,
        middlewares=[
            NatsTelemetryMiddleware(tracer_provider=tracer_provider),
            retry_middleware(service, consumers, emit_later),
        ],
        max_reconnect_attempts=-1,
    )
    emit = broker_emitter(broker)
    emit_ref.append(emit)
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

    return Runtime(
        service, broker, emit, KvJobStore(jobs_kv), ObjectInputStore(inputs_obs), consumers
    )


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

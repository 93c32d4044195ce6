"""Process plumbing shared by the services: broker and middlewares, KV access, HTTP serving."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import uvicorn
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from shared import telemetry
from shared.config import CommonSettings
from shared.inputs import InputStore, ObjectInputStore
from shared.jobstore import JobStore, KvJobStore, KvUpstreamIndex, UpstreamIndex
from shared.logs import configure_logging
from shared.messaging import Delivery, DeliveryMiddleware, ServiceRouter, fix_pull_fetch_timeout
from shared.streams import INPUTS_BUCKET, JOBS_BUCKET, UPSTREAM_BUCKET, ensure_jetstream

log = logging.getLogger("clipline.runtime")
T = TypeVar("T")


@dataclass(frozen=True)
class Platform:
    """What every service process has: a broker (built, not connected) and the stores on it."""

    service: str
    broker: NatsBroker
    jobs: JobStore
    upstream: UpstreamIndex
    inputs: InputStore


def cached(make: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """A lazy handle: opened on first use (after the broker connected), then reused."""
    cache: list[T] = []

    async def get() -> T:
        if not cache:
            cache.append(await make())
        return cache[0]

    return get


def make_broker(nats_url: str, tracer_provider: TracerProvider) -> NatsBroker:
    """The broker with telemetry and the house delivery middleware. Per-message lines of
    FastStream are DEBUG: a service logs lifecycle steps at INFO, not every delivery."""
    fix_pull_fetch_timeout()
    return NatsBroker(
        nats_url,
        middlewares=[NatsTelemetryMiddleware(tracer_provider=tracer_provider), DeliveryMiddleware],
        max_reconnect_attempts=-1,
        logger=logging.getLogger("clipline.broker"),  # our handler and format, no colour codes
        log_level=logging.DEBUG,
    )


def make_platform(service: str, nats_url: str, tracer_provider: TracerProvider) -> Platform:
    """Build (not connect) the broker and the KV / object-store adapters on it."""
    broker = make_broker(nats_url, tracer_provider)
    jobs_kv = cached(lambda: broker.key_value(JOBS_BUCKET, declare=False))
    upstream_kv = cached(lambda: broker.key_value(UPSTREAM_BUCKET, declare=False))
    inputs_obs = cached(lambda: broker.object_storage(INPUTS_BUCKET, declare=False))
    return Platform(
        service,
        broker,
        # lazily: the broker has no connection until it starts
        KvJobStore(jobs_kv, lambda: broker.connection.jetstream()),  # noqa: PLW0108
        KvUpstreamIndex(upstream_kv),
        ObjectInputStore(inputs_obs),
    )


def wire(broker: NatsBroker, router: ServiceRouter, deps: object, jobs: JobStore) -> None:
    """Include a service's router and put its deps (handlers inject `Context("deps.<x>")`) and
    the delivery policy's needs in the broker's context."""
    broker.include_router(router)
    broker.context.set_global("deps", deps)
    broker.context.set_global(
        "delivery", Delivery(router.service, jobs, router.emit, router.consumers)
    )


async def provision(nats_url: str) -> None:
    """Declare the stream and buckets before any consumer starts (idempotent)."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        await ensure_jetstream(nc.jetstream())
    finally:
        await nc.close()


def make_asgi(broker: NatsBroker, routes: Sequence[tuple[str, object]] = ()) -> AsgiFastStream:
    """The service's ASGI app: broker lifecycle, GET /healthz (204 when NATS answers), extras."""
    return AsgiFastStream(
        broker,
        logger=logging.getLogger("clipline.app"),
        asgi_routes=[("/healthz", make_ping_asgi(broker, timeout=2.0)), *routes],  # type: ignore[list-item]
    )


class Dispatch:
    """Routes HTTP under `prefix` to an API; lifespan and /healthz to the FastStream app."""

    def __init__(self, prefix: str, api: Any, stream_app: AsgiFastStream) -> None:
        self.prefix = prefix
        self.api = api
        self.stream_app = stream_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.api(scope, receive, send)
        else:
            await self.stream_app(scope, receive, send)


async def serve(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Run an ASGI app under uvicorn until SIGTERM/SIGINT; uvicorn logs through our handler."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    await uvicorn.Server(config).serve()


@asynccontextmanager
async def service_runtime(service: str, settings: CommonSettings) -> AsyncIterator[Platform]:
    """Entry-point set-up for a service process: logging, global tracing, streams, platform."""
    configure_logging(settings.log_level, settings.log_format)
    provider = telemetry.make_tracer_provider(service)
    telemetry.install(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    await provision(settings.nats_url)
    try:
        yield make_platform(service, settings.nats_url, provider)
    finally:
        provider.shutdown()


async def serve_app(app: Any, settings: CommonSettings) -> None:
    await serve(app, settings.http_host, settings.http_port, settings.log_level)

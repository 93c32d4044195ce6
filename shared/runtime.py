"""Process plumbing shared by the services: broker and middlewares, KV access, HTTP serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import uvicorn
from faststream.asgi import AsgiFastStream, make_ping_asgi
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsCredentials
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from shared import metrics, pullfetch, telemetry
from shared.config import CommonSettings, MetricsSettings, load_settings, nats_servers
from shared.consume import ConsumeLoop
from shared.identities import SERVICES
from shared.inputs import InputStore, ObjectInputStore
from shared.jobstore import JobStore, KvJobStore, KvUpstreamIndex, UpstreamIndex
from shared.logs import configure_logging
from shared.messaging import Delivery, DeliveryMiddleware, ServiceRouter, handle_delivery
from shared.streams import (
    INPUTS_BUCKET,
    JOBS_BUCKET,
    JOBS_STREAM_NAME,
    UPSTREAM_BUCKET,
    ensure_jetstream,
)
from shared.unavailable import ELECTION_ERRORS

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
    """A lazy handle: opened on first use (after the broker connected), then reused. Callers
    that come while it is being opened wait for that one opening (a KV handle costs a
    stream-info request: not one per handler started at once); a failed opening is tried
    again by the next caller."""
    cache: list[T] = []
    opening: list[asyncio.Future[T]] = []

    async def get() -> T:
        if cache:
            return cache[0]
        if not opening:
            opening.append(asyncio.ensure_future(make()))
        task = opening[0]
        try:
            handle = await asyncio.shield(task)  # a cancelled caller leaves it to the others
        except Exception:
            if opening and opening[0] is task:
                opening.clear()  # the next caller tries again
            raise
        if not cache:
            cache.append(handle)
        return handle

    return get


class ServiceBroker(NatsBroker):
    """A service's broker: FastStream's connection, context, KV and object-store handles, and
    its declarations (the AsyncAPI document, an in-memory TestNatsBroker); but its subscribers
    are served by the house consume loop and its routers emit straight to JetStream
    (shared/consume.py says why). TestNatsBroker replaces `start`, so under it FastStream
    serves them as before."""

    def __init__(self, *args: Any, tracer_provider: TracerProvider, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.house_routers: list[ServiceRouter] = []
        self._tracer = tracer_provider.get_tracer("clipline.consume")
        self._spans = telemetry.records(tracer_provider)
        self._loops: list[ConsumeLoop] = []
        self._readings: asyncio.Task[None] | None = None

    async def start(self) -> None:
        connection = await self.connect()
        js = connection.jetstream()
        delivery = self.context.get("delivery")

        async def policy(msg: Any, handle: Callable[[], Awaitable[Any]]) -> Any:
            return await handle_delivery(delivery, msg, handle)

        for router in self.house_routers:
            router.direct = js
            router.tracer = self._tracer if self._spans else None  # PRODUCER spans of emits
            for handling in router.handlings:
                loop = ConsumeLoop(handling, policy, self._tracer, self.context, self._spans)
                await loop.start(js)
                self._loops.append(loop)
        if metrics.enabled() and self._loops:
            durables = sorted(
                {(loop.handling.stream, loop.handling.durable) for loop in self._loops}
            )
            service = self.house_routers[0].service
            self._readings = asyncio.create_task(read_consumers(js, service, durables))
        self.running = True

    async def stop(self, *args: Any, **kwargs: Any) -> None:
        if self._readings is not None:
            self._readings.cancel()
            self._readings = None
        loops, self._loops = self._loops, []
        await asyncio.gather(*(loop.stop() for loop in loops))
        for router in self.house_routers:
            router.direct, router.tracer = None, None
        await super().stop(*args, **kwargs)


CONSUMER_READING_SECONDS = 10.0
"""How often a service reads its durables' state from JetStream for its metrics (one
CONSUMER.INFO request per durable: Prometheus scrapes every 15 s)."""


async def read_consumers(
    js: Any,
    service: str,
    durables: Sequence[tuple[str, str]],
    every: float = CONSUMER_READING_SECONDS,
) -> None:
    """Keep the consumer gauges (pending, ack pending, redelivered) of this service's own
    durables current: its identity may read their info and no other's."""
    while True:
        for stream, durable in durables:
            labels = {"service": service, "stream": stream, "durable": durable}
            try:
                info = await js.consumer_info(stream, durable)
            except Exception as exc:  # NATS away for a moment: the last reading stays
                log.debug("metrics: no info of %s/%s: %s", stream, durable, exc)
                continue
            metrics.CONSUMER_PENDING.set(info.num_pending or 0, labels)
            metrics.CONSUMER_ACK_PENDING.set(info.num_ack_pending or 0, labels)
            metrics.CONSUMER_REDELIVERED.set(info.num_redelivered or 0, labels)
        await asyncio.sleep(every)


def make_broker(
    nats_url: str,
    tracer_provider: TracerProvider,
    creds: Path | None = None,
    inbox_prefix: str = "_INBOX",
) -> ServiceBroker:
    """The broker with telemetry and the house delivery middleware, connecting as the identity
    in `creds` (a `.creds` file) with its own `inbox_prefix`. Per-message lines of FastStream
    are DEBUG: a service logs lifecycle steps at INFO, not every delivery."""
    pullfetch.install()
    return ServiceBroker(
        nats_servers(nats_url),
        tracer_provider=tracer_provider,
        security=NatsCredentials.from_file(creds) if creds is not None else None,
        inbox_prefix=inbox_prefix,
        middlewares=[NatsTelemetryMiddleware(tracer_provider=tracer_provider), DeliveryMiddleware],
        max_reconnect_attempts=-1,
        logger=logging.getLogger("clipline.broker"),  # our handler and format, no colour codes
        log_level=logging.DEBUG,
    )


def make_platform(
    service: str, nats_url: str, tracer_provider: TracerProvider, creds: Path | None = None
) -> Platform:
    """Build (not connect) the broker and the KV / object-store adapters on it; a service of
    shared.identities uses its own inbox prefix (its permissions allow no other)."""
    identity = SERVICES.get(service)
    inbox = identity.inbox_prefix if identity is not None else "_INBOX"
    broker = make_broker(nats_url, tracer_provider, creds, inbox)
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
    if isinstance(broker, ServiceBroker):
        broker.house_routers.append(router)
    broker.context.set_global("deps", deps)
    broker.context.set_global(
        "delivery", Delivery(router.service, jobs, router.emit, router.consumers)
    )


class NotProvisionedError(SystemExit):
    """The stream a service consumes does not exist: its admin has not provisioned NATS."""


async def provision(nats_url: str, creds: Path | None = None, replicas: int | None = None) -> None:
    """Declare the streams and buckets (idempotent), each on `replicas` servers (3 on a NATS
    cluster): with the admin identity, from `clipline up`, `clipline nats-provision` (compose's
    init, a Kubernetes Job) or a migration. No service identity may."""
    nc = await nats.connect(
        nats_servers(nats_url), connect_timeout=5, max_reconnect_attempts=3,
        user_credentials=None if creds is None else str(creds),
    )  # fmt: skip
    try:
        # A cluster just started (or electing) may answer "JetStream not enabled" or nothing
        # for a moment: the declarations are idempotent, so they are made again.
        deadline = asyncio.get_running_loop().time() + ELECTION_SECONDS
        while True:
            try:
                await ensure_jetstream(nc.jetstream(), replicas)
                break
            except ELECTION_ERRORS:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.warning("provisioning: JetStream not answering yet; asking again")
                await asyncio.sleep(1.0)  # a backoff, not a synchronisation
    finally:
        await nc.close()


async def require_provisioned(settings: CommonSettings, inbox_prefix: str) -> None:
    """Fail at start, with what to do, when the jobs stream is missing (services never create
    streams or buckets; their identities may not)."""
    creds = settings.nats_creds
    nc = await nats.connect(
        nats_servers(settings.nats_url), connect_timeout=5, max_reconnect_attempts=3,
        inbox_prefix=inbox_prefix,
        user_credentials=None if creds is None else str(creds),
    )  # fmt: skip
    try:
        await _stream_info_through_elections(nc, JOBS_STREAM_NAME)
    except NotFoundError:
        raise NotProvisionedError(
            f"NATS has no stream {JOBS_STREAM_NAME}: provision it with the admin identity "
            "(`clipline up` does; in compose the `nats-init` service; by hand `clipline "
            "nats-provision`)"
        ) from None
    finally:
        await nc.close()


ELECTION_SECONDS = 60.0


async def _stream_info_through_elections(nc: NatsClient, stream: str) -> None:
    """`stream_info`, asked again (1 s apart) while the cluster elects a leader, for up to
    ELECTION_SECONDS: a service (re)started then waits instead of exiting."""
    deadline = asyncio.get_running_loop().time() + ELECTION_SECONDS
    while True:
        try:
            await nc.jetstream().stream_info(stream)
            return
        except ELECTION_ERRORS:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            log.warning("stream %s: no answer (a leader being elected?); asking again", stream)
            await asyncio.sleep(1.0)  # a backoff, not a synchronisation


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
    HTTPXClientInstrumentor().instrument(
        tracer_provider=provider,
        request_hook=telemetry.scrub_httpx_span,  # a span keeps no URL query (credentials)
        async_request_hook=telemetry.scrub_httpx_span_async,
    )
    where = load_settings(MetricsSettings)
    metrics.start(service, where.host, where.port)
    identity = SERVICES.get(service)
    if settings.nats_creds is None:
        log.warning("%s: no CLIPLINE_NATS_CREDS: connecting to NATS anonymously", service)
    inbox = identity.inbox_prefix if identity else "_INBOX"
    await require_provisioned(settings, inbox)
    try:
        yield make_platform(service, settings.nats_url, provider, settings.nats_creds)
    finally:
        provider.shutdown()


async def serve_app(app: Any, settings: CommonSettings) -> None:
    await serve(app, settings.http_host, settings.http_port, settings.log_level)

"""poller composition root: deps in, ASGI app (events + webhook endpoint) out. No network I/O."""

from __future__ import annotations

from contextlib import AsyncExitStack

from standardwebhooks import Webhook

from services.poller import handlers
from services.poller.adapters import KvExpectations, KvSeenWebhooks, NatsTimerAcks
from services.poller.domain import PollPolicy
from services.poller.follow import SERVICE
from services.poller.held import HeldTimers
from services.poller.observe import PollerObserver
from services.poller.ports import Deps, Expectations, SeenWebhooks, WebhookDeps
from services.poller.webhooks import build_webhooks
from shared.contracts import (
    JobCancelledV1,
    JobGeneratedV1,
    JobProgressV1,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.messaging import ServiceRouter
from shared.provider import VideoProvider
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, cached, make_asgi, wire
from shared.streams import DURATIONS_BUCKET, WEBHOOKS_BUCKET


def build_router() -> ServiceRouter:
    """The handlers of handlers.py on one router, each a durable consumer."""
    router = ServiceRouter(
        SERVICE, emits=[JobProgressV1, JobGeneratedV1, JobTimedOutV1, JobCancelledV1]
    )
    router.on(
        JobSubmittedV1,
        max_errors=handlers.MAX_ERRORS,
        max_workers=32,
        max_ack_pending=handlers.MAX_FOLLOWED,
    )(handlers.on_job_submitted)
    return router


def kv_seen(platform: Platform) -> KvSeenWebhooks:
    broker = platform.broker
    return KvSeenWebhooks(cached(lambda: broker.key_value(WEBHOOKS_BUCKET, declare=False)))


def kv_expectations(platform: Platform, registry: ProviderSpec) -> KvExpectations:
    broker = platform.broker
    return KvExpectations(
        cached(lambda: broker.key_value(DURATIONS_BUCKET, declare=False)), registry
    )


def build_app(
    platform: Platform,
    provider: VideoProvider,
    policy: PollPolicy,
    verifier: Webhook | None = None,
    *,
    expectations: Expectations,
    seen: SeenWebhooks | None = None,
    held: HeldTimers | None = None,
    observer: PollerObserver | None = None,
) -> Dispatch:
    """`verifier` None: webhooks off (the endpoint answers 503), and no delivery held.
    `observer` keeps the poller's metrics (its gauges set every few seconds while it runs)."""
    router = build_router()
    observer = observer or PollerObserver()
    deps = Deps(platform.jobs, router.emit, provider, policy, expectations, observer=observer)
    hooks = None
    if verifier is not None:
        kv = kv_seen(platform)
        broker = platform.broker
        if held is None:
            held = HeldTimers(NatsTimerAcks(lambda: broker.connection))
        deps = Deps(
            platform.jobs, router.emit, provider, policy, expectations,
            early=kv, held=held, observer=observer,
        )  # fmt: skip
        hooks = WebhookDeps(deps, platform.upstream, seen or kv, verifier)
    wire(platform.broker, router, deps, platform.jobs)
    app = make_asgi(platform.broker)
    running = AsyncExitStack()

    @app.after_startup
    async def start_reporting() -> None:
        await running.enter_async_context(observer.reporting())

    @app.on_shutdown
    async def stop_reporting() -> None:
        await running.aclose()

    return Dispatch("/webhooks/", build_webhooks(hooks), app)

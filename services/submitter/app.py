"""submitter composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from collections.abc import Callable

from faststream.asgi import AsgiFastStream

from services.submitter import handlers
from services.submitter.adapters import KvRates
from services.submitter.domain import CREATE_RETRY_CAP_SECONDS
from services.submitter.ports import Deps
from services.submitter.rates import Limits
from services.submitter.settings import SubmitterSettings
from shared.contracts import (
    JobAdmittedV1,
    JobCancelledV1,
    JobCancelRequestedV1,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.messaging import ServiceRouter
from shared.provider import VideoProvider
from shared.registry import ProviderSpec
from shared.runtime import Platform, cached, make_asgi, wire
from shared.streams import RATES_BUCKET


def build_router(max_attempts: int) -> ServiceRouter:
    """The handlers of handlers.py on one router, each a durable consumer."""
    router = ServiceRouter(handlers.SERVICE, emits=[JobSubmittedV1, JobTimedOutV1, JobCancelledV1])
    router.on(
        JobAdmittedV1, max_errors=max_attempts, max_workers=64, retry_cap=CREATE_RETRY_CAP_SECONDS
    )(handlers.on_job_admitted)
    router.on(JobCancelRequestedV1, max_errors=max_attempts)(handlers.on_job_cancel_requested)
    return router


def model_limits(
    provider: ProviderSpec, settings: SubmitterSettings
) -> Callable[[str], tuple[str, Limits]]:
    """A model name (or alias) -> the model whose limit it shares upstream, and that limit:
    the registry's, unless CLIPLINE_RATE_* override it."""

    def limit(rpm: int, concurrency: int) -> Limits:
        return Limits(
            rpm=settings.rate_rpm or rpm,
            concurrency=settings.rate_concurrency or concurrency,
            burst_seconds=settings.rate_burst_seconds,
        )

    def of(model: str) -> tuple[str, Limits]:
        spec = provider.model(model)
        if spec is None:  # intake lets no such job through; a limit anyway, never none
            return model, limit(provider.rpm, provider.concurrency)
        return spec.name, limit(spec.rpm, spec.concurrency)

    return of


def kv_rates(platform: Platform, provider: ProviderSpec, settings: SubmitterSettings) -> KvRates:
    broker = platform.broker
    kv = cached(lambda: broker.key_value(RATES_BUCKET, declare=False))
    return KvRates(kv, provider.name, model_limits(provider, settings))


def build_app(
    platform: Platform,
    provider: VideoProvider,
    registry: ProviderSpec,
    settings: SubmitterSettings,
) -> AsgiFastStream:
    router = build_router(settings.max_attempts)
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        upstream=platform.upstream,
        provider=provider,
        emit=router.emit,
        submit_deadline=settings.submit_deadline_seconds,
        rates=kv_rates(platform, registry, settings),
        provider_name=registry.name,
    )
    wire(platform.broker, router, deps, platform.jobs)
    return make_asgi(platform.broker)

"""pricing_guard composition root: deps in, ASGI app (events + admin API) out. No network I/O."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta

from services.pricing_guard import handlers
from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.admin import build_admin
from services.pricing_guard.observe import REFRESH_SECONDS, Gauges
from services.pricing_guard.ports import BudgetStore, Deps
from services.pricing_guard.usecases import SERVICE, sweep
from shared import metrics
from shared.apikeys import ApiKeys, kv_api_keys
from shared.contracts import (
    BudgetAlertV1,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCancelledV1,
    JobCompletedV1,
    JobFailedV1,
    JobRejectedV1,
    JobTimedOutV1,
)
from shared.kvatomic import AtomicKv
from shared.messaging import ServiceRouter, periodically
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, cached, make_asgi, wire
from shared.streams import BUDGETS_BUCKET

GROUP_WORKERS = 64
"""Admissions (and settlements of completed jobs) handled at once by one replica: KvBudgets'
largest group."""
SWEEP_GRACE = timedelta(minutes=2)
"""A job ended this long ago whose reservation is still open lost its settlement: sweep it."""


def build_router() -> ServiceRouter:
    """The handlers of handlers.py on one router, each a durable consumer."""
    router = ServiceRouter(
        SERVICE, emits=[JobAdmittedV1, JobRejectedV1, BudgetAlertV1, JobCancelledV1]
    )
    # Admissions and settlements are group-committed (KvBudgets): the more are in flight at
    # once, the fewer atomic batches (and writes of the shared counters) per job.
    router.on(JobAcceptedV1, max_workers=GROUP_WORKERS)(handlers.on_job_accepted)
    forever = handlers.SETTLE_FOREVER
    router.on(JobCompletedV1, max_errors=forever, max_workers=GROUP_WORKERS)(
        handlers.on_job_completed
    )
    router.on(JobFailedV1, max_errors=forever)(handlers.on_job_failed)
    router.on(JobTimedOutV1, max_errors=forever)(handlers.on_job_timed_out)
    router.on(JobCancelledV1, max_errors=forever)(handlers.on_job_cancelled)
    return router


def kv_budgets(platform: Platform) -> KvBudgets:
    """Budgets in the clipline_budgets bucket, through the platform's broker connection."""
    broker = platform.broker
    kv = cached(lambda: broker.key_value(BUDGETS_BUCKET, declare=False))
    return KvBudgets(AtomicKv(kv, lambda: broker.connection, BUDGETS_BUCKET))


def build_app(
    platform: Platform,
    provider: ProviderSpec,
    admin_token: str | None,
    *,
    budgets: BudgetStore | None = None,
    keys: ApiKeys | None = None,
    sweep_every: float = 600.0,
) -> Dispatch:
    router = build_router()
    store = budgets if budgets is not None else kv_budgets(platform)
    wire(platform.broker, router, Deps(platform.jobs, router.emit, provider, store), platform.jobs)
    stream_app = make_asgi(platform.broker)
    running = AsyncExitStack()

    @stream_app.after_startup
    async def start_sweeper() -> None:
        await running.enter_async_context(
            periodically(sweep_every, lambda: sweep(platform.jobs, store, SWEEP_GRACE))
        )
        if metrics.enabled():  # read only for a /metrics that someone scrapes
            gauges = Gauges(store)
            await running.enter_async_context(
                periodically(lambda run: 0.0 if run == 0 else REFRESH_SECONDS, gauges.refresh)
            )

    @stream_app.on_shutdown
    async def stop_sweeper() -> None:
        await running.aclose()

    api_keys = keys if keys is not None else kv_api_keys(platform.broker)
    admin = build_admin(store, admin_token, platform.jobs, api_keys)
    return Dispatch("/v1/admin/", admin, stream_app)

"""storage composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from contextlib import AsyncExitStack

from faststream.asgi import AsgiFastStream

from services.storage import handlers
from services.storage.assets import AssetsResponder
from services.storage.domain import CONCURRENT_STORES
from services.storage.gate import PriorityGate
from services.storage.ports import AssetStore, Deps, RetentionStore
from services.storage.retention import retention_task
from shared import metrics
from shared.contracts import JobCancelledV1, JobCompletedV1, JobGeneratedV1
from shared.messaging import ServiceRouter
from shared.provider import VideoProvider
from shared.runtime import Platform, make_asgi, wire


def build_router(max_attempts: int, *, concurrent_stores: int = CONCURRENT_STORES) -> ServiceRouter:
    """The handlers of handlers.py on one router. Four times as many jobs are taken as may
    store at once (`Deps.gate`), so a freed slot goes to the one that expires soonest."""
    router = ServiceRouter(handlers.SERVICE, emits=[JobCompletedV1, JobCancelledV1])
    router.on(
        JobGeneratedV1, max_errors=max_attempts, max_workers=concurrent_stores * 4, fetch_batch=1
    )(handlers.on_job_generated)
    return router


def build_app(
    platform: Platform,
    provider: VideoProvider,
    store: AssetStore,
    max_attempts: int,
    *,
    delete_upstream: bool = False,
    concurrent_stores: int = CONCURRENT_STORES,
    retention: RetentionStore | None = None,
    retention_every: float = 3600.0,
) -> AsgiFastStream:
    router = build_router(max_attempts, concurrent_stores=concurrent_stores)
    deps = Deps(
        platform.jobs, router.emit, provider, store,
        gate=PriorityGate(concurrent_stores), delete_upstream=delete_upstream,
    )  # fmt: skip
    wire(platform.broker, router, deps, platform.jobs)
    # The S3 error series the dashboards and alerts read exist from the start, at 0.
    metrics.S3_ERRORS.add(0, {"operation": "put", "reason": "unavailable"})
    # No bucket check at start: the store creates its bucket on first use, so storage starts
    # (and is healthy) while S3 is down.
    app = make_asgi(platform.broker)
    responder = AssetsResponder(deps)  # presign/delete for intake (services/storage/assets.py)

    @app.after_startup
    async def answer_assets() -> None:
        await responder.start(platform.broker.connection)

    @app.on_shutdown
    async def stop_answering() -> None:
        await responder.stop()

    if retention is not None:  # CLIPLINE_S3_RETENTION_DAYS > 0
        running = AsyncExitStack()

        @app.after_startup
        async def start_retention() -> None:
            await running.enter_async_context(retention_task(retention, retention_every))

        @app.on_shutdown
        async def stop_retention() -> None:
            await running.aclose()

    return app

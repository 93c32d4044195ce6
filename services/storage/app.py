"""storage composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from contextlib import AsyncExitStack

from faststream.asgi import AsgiFastStream

from services.storage.domain import CONCURRENT_STORES
from services.storage.handlers import build_router
from services.storage.ports import AssetStore, Deps, RetentionStore
from services.storage.retention import retention_task
from shared.provider import VideoProvider
from shared.runtime import Platform, make_asgi, wire


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
    router = build_router(
        max_attempts, delete_upstream=delete_upstream, concurrent_stores=concurrent_stores
    )
    wire(platform.broker, router, Deps(platform.jobs, router.emit, provider, store), platform.jobs)
    # No bucket check at start: the store creates its bucket on first use, so storage starts
    # (and is healthy) while S3 is down.
    app = make_asgi(platform.broker)
    if retention is not None:  # CLIPLINE_S3_RETENTION_DAYS > 0
        running = AsyncExitStack()

        @app.after_startup
        async def start_retention() -> None:
            await running.enter_async_context(retention_task(retention, retention_every))

        @app.on_shutdown
        async def stop_retention() -> None:
            await running.aclose()

    return app

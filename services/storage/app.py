"""storage composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.storage.domain import CONCURRENT_STORES
from services.storage.handlers import build_router
from services.storage.ports import AssetStore, Deps
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
) -> AsgiFastStream:
    router = build_router(
        max_attempts, delete_upstream=delete_upstream, concurrent_stores=concurrent_stores
    )
    wire(platform.broker, router, Deps(platform.jobs, router.emit, provider, store), platform.jobs)
    # No bucket check at start: the store creates its bucket on first use, so storage starts
    # (and is healthy) while S3 is down.
    return make_asgi(platform.broker)

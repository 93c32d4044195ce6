"""storage composition root. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.storage.handlers import build_router
from services.storage.ports import AssetStore
from shared.provider import VideoProvider
from shared.runtime import Runtime, make_asgi


def build_app(
    rt: Runtime, provider: VideoProvider, store: AssetStore, max_attempts: int
) -> AsgiFastStream:
    rt.broker.include_router(build_router(rt, provider, store, max_attempts))
    app = make_asgi(rt)
    app.on_startup(store.ensure_bucket)
    return app

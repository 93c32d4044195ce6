"""submitter composition root. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.submitter.handlers import build_router
from shared.provider import VideoProvider
from shared.runtime import Runtime, make_asgi


def build_app(
    rt: Runtime, provider: VideoProvider, max_attempts: int, deadline: float
) -> AsgiFastStream:
    rt.broker.include_router(build_router(rt, provider, max_attempts, deadline))
    return make_asgi(rt)

"""submitter composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.submitter.handlers import build_router
from services.submitter.ports import Deps
from shared.provider import VideoProvider
from shared.runtime import Platform, make_asgi, wire


def build_app(
    platform: Platform, provider: VideoProvider, max_attempts: int, deadline: float
) -> AsgiFastStream:
    router = build_router(max_attempts)
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        upstream=platform.upstream,
        provider=provider,
        emit=router.emit,
        submit_deadline=deadline,
    )
    wire(platform.broker, router, deps, platform.jobs)
    return make_asgi(platform.broker)

"""poller composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.poller.domain import PollPolicy
from services.poller.handlers import build_router
from services.poller.ports import Deps
from shared.provider import VideoProvider
from shared.runtime import Platform, make_asgi, wire


def build_app(platform: Platform, provider: VideoProvider, policy: PollPolicy) -> AsgiFastStream:
    router = build_router()
    wire(platform.broker, router, Deps(platform.jobs, router.emit, provider, policy), platform.jobs)
    return make_asgi(platform.broker)

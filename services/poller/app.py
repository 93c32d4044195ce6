"""poller composition root. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.poller.domain import PollPolicy
from services.poller.handlers import build_router
from shared.provider import VideoProvider
from shared.runtime import Runtime, make_asgi


def build_app(rt: Runtime, provider: VideoProvider, policy: PollPolicy) -> AsgiFastStream:
    rt.broker.include_router(build_router(rt, provider, policy))
    return make_asgi(rt)

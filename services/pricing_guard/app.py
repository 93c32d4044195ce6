"""pricing_guard composition root. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.pricing_guard.handlers import build_router
from shared.registry import Registry
from shared.runtime import Runtime, make_asgi


def build_app(rt: Runtime, registry: Registry) -> AsgiFastStream:
    rt.broker.include_router(build_router(rt, registry))
    return make_asgi(rt)

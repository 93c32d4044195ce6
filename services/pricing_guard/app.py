"""pricing_guard composition root: deps in, ASGI app out. No network I/O here."""

from __future__ import annotations

from faststream.asgi import AsgiFastStream

from services.pricing_guard.handlers import build_router
from services.pricing_guard.ports import Deps
from shared.registry import ProviderSpec
from shared.runtime import Platform, make_asgi, wire


def build_app(platform: Platform, provider: ProviderSpec) -> AsgiFastStream:
    router = build_router()
    wire(platform.broker, router, Deps(platform.jobs, router.emit, provider), platform.jobs)
    return make_asgi(platform.broker)

"""Intake composition root: router + HTTP API on one ASGI app. No network I/O here."""

from __future__ import annotations

from typing import Any

from services.intake.adapters import NatsAssets, NatsJobEvents, probe_image
from services.intake.handlers import build_router
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.apikeys import kv_api_keys
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, make_asgi, wire

HEALTH_PATH = "/healthz"


def build_app(platform: Platform, provider: ProviderSpec) -> Dispatch:
    router = build_router()
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        emit=router.emit,
        provider=provider,
        probe=probe_image,
        keys=kv_api_keys(platform.broker),
        assets=NatsAssets(lambda: platform.broker.connection),
        events=NatsJobEvents(lambda: platform.broker.connection),  # connected by then
    )
    wire(platform.broker, router, deps, platform.jobs)
    return ApiFirst("/", build_http(deps), make_asgi(platform.broker))


class ApiFirst(Dispatch):
    """Every HTTP path but /healthz to the API (so an unknown path is the API's 404 problem,
    and /docs, /redoc are its own); lifespan and /healthz to the FastStream app."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH_PATH:
            await self.api(scope, receive, send)
        else:
            await self.stream_app(scope, receive, send)

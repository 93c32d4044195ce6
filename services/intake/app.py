"""Intake composition root: router + HTTP API on one ASGI app. No network I/O here."""

from __future__ import annotations

from typing import Any

from faststream.asgi import AsgiFastStream

from services.intake.adapters import probe_image
from services.intake.handlers import build_router
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.registry import ProviderSpec
from shared.runtime import Platform, make_asgi, wire


class Dispatch:
    """Routes /v1/* HTTP to the API; lifespan and /healthz to the FastStream app."""

    def __init__(self, api: Any, stream_app: AsgiFastStream) -> None:
        self.api = api
        self.stream_app = stream_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.api(scope, receive, send)
        else:
            await self.stream_app(scope, receive, send)


def build_app(platform: Platform, provider: ProviderSpec, default_tenant: str) -> Dispatch:
    router = build_router()
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        emit=router.emit,
        provider=provider,
        probe=probe_image,
        default_tenant=default_tenant,
    )
    wire(platform.broker, router, deps, platform.jobs)
    return Dispatch(build_http(deps), make_asgi(platform.broker))

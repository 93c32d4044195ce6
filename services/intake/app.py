"""Intake composition root: router + HTTP API on one ASGI app. No network I/O here."""

from __future__ import annotations

from typing import Any

from faststream.asgi import AsgiFastStream

from services.intake.handlers import build_router
from services.intake.http import build_http
from shared.registry import Registry
from shared.runtime import Runtime, make_asgi


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


def build_app(rt: Runtime, registry: Registry, default_tenant: str) -> Dispatch:
    rt.broker.include_router(build_router(rt, registry))
    return Dispatch(build_http(rt, registry, default_tenant), make_asgi(rt))

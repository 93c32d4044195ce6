"""Intake composition root: router + HTTP API on one ASGI app. No network I/O here."""

from __future__ import annotations

import functools
from typing import Any

from services.intake import callbacks_send
from services.intake.adapters import NatsAssets, NatsJobEvents, probe_image
from services.intake.callbacks import RETRY_SCHEDULE_SECONDS, retry_wait
from services.intake.callbacks_kv import KvCallbacks
from services.intake.handlers import build_router
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.apikeys import kv_api_keys
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, cached, make_asgi, wire
from shared.streams import CALLBACKS_BUCKET

HEALTH_PATH = "/healthz"


def build_app(
    platform: Platform,
    provider: ProviderSpec,
    *,
    callbacks_allow_private: bool = False,
    callbacks_retry: tuple[float, ...] = RETRY_SCHEDULE_SECONDS,
) -> Dispatch:
    router = build_router()
    broker = platform.broker
    callbacks_kv = cached(lambda: broker.key_value(CALLBACKS_BUCKET, declare=False))
    sender = callbacks_send.Sender(
        platform.jobs,
        KvCallbacks(callbacks_kv),
        allow_private=callbacks_allow_private,
        schedule=functools.partial(retry_wait, schedule=callbacks_retry),
    )
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        emit=router.emit,
        provider=provider,
        probe=probe_image,
        keys=kv_api_keys(platform.broker),
        assets=NatsAssets(lambda: platform.broker.connection),
        events=NatsJobEvents(lambda: platform.broker.connection),  # connected by then
        callbacks=sender,
    )
    wire(platform.broker, router, deps, platform.jobs)
    stream_app = make_asgi(platform.broker)
    stream_app.after_shutdown(sender.close)  # its HTTP session, once the consumers stopped
    return ApiFirst("/", build_http(deps), stream_app)


class ApiFirst(Dispatch):
    """Every HTTP path but /healthz to the API (so an unknown path is the API's 404 problem,
    and /docs, /redoc are its own); lifespan and /healthz to the FastStream app."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != HEALTH_PATH:
            await self.api(scope, receive, send)
        else:
            await self.stream_app(scope, receive, send)

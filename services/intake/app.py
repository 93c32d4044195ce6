"""Intake composition root: router + HTTP API on one ASGI app. No network I/O here."""

from __future__ import annotations

from services.intake import callbacks_send
from services.intake.adapters import NatsAssets, probe_image
from services.intake.callbacks_kv import KvCallbacks
from services.intake.handlers import build_router
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.apikeys import kv_api_keys
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, cached, make_asgi, wire
from shared.streams import CALLBACKS_BUCKET


def build_app(
    platform: Platform, provider: ProviderSpec, *, callbacks_allow_private: bool = False
) -> Dispatch:
    router = build_router()
    broker = platform.broker
    callbacks_kv = cached(lambda: broker.key_value(CALLBACKS_BUCKET, declare=False))
    sender = callbacks_send.Sender(
        platform.jobs, KvCallbacks(callbacks_kv), allow_private=callbacks_allow_private
    )
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        emit=router.emit,
        provider=provider,
        probe=probe_image,
        keys=kv_api_keys(platform.broker),
        assets=NatsAssets(lambda: platform.broker.connection),
        callbacks=sender,
    )
    wire(platform.broker, router, deps, platform.jobs)
    stream_app = make_asgi(platform.broker)
    stream_app.after_shutdown(sender.close)  # its HTTP session, once the consumers stopped
    return Dispatch("/v1/", build_http(deps), stream_app)

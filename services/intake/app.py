"""Intake composition root: router + HTTP API on one ASGI app. No network I/O here."""

from __future__ import annotations

from services.intake.adapters import probe_image
from services.intake.handlers import build_router
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.apikeys import KvApiKeys
from shared.registry import ProviderSpec
from shared.runtime import Dispatch, Platform, cached, make_asgi, wire
from shared.streams import API_KEYS_BUCKET


def kv_api_keys(platform: Platform) -> KvApiKeys:
    """The API keys in the clipline_api_keys bucket, through the platform's broker."""
    broker = platform.broker
    kv = cached(lambda: broker.key_value(API_KEYS_BUCKET, declare=False))
    return KvApiKeys(kv, lambda: broker.connection.jetstream())  # noqa: PLW0108


def build_app(platform: Platform, provider: ProviderSpec) -> Dispatch:
    router = build_router()
    deps = Deps(
        jobs=platform.jobs,
        inputs=platform.inputs,
        emit=router.emit,
        provider=provider,
        probe=probe_image,
        keys=kv_api_keys(platform),
    )
    wire(platform.broker, router, deps, platform.jobs)
    return Dispatch("/v1/", build_http(deps), make_asgi(platform.broker))

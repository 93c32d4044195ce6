"""Run storage: python -m services.storage."""

from __future__ import annotations

import contextlib

import uvloop
from minio import Minio

from services.storage.adapters import S3AssetStore, s3_http_client
from services.storage.app import build_app
from services.storage.s3http import S3Endpoint, S3Puts
from services.storage.settings import StorageSettings
from shared.config import ConfigError, S3Settings, UpstreamSettings, load_settings
from shared.provider import OpenAIVideosProvider
from shared.provider.calls import AiohttpCalls
from shared.provider.downloads import AiohttpDownloads
from shared.runtime import serve_app, service_runtime

SERVICE = "storage"


async def main() -> None:
    settings, upstream, s3 = (
        load_settings(StorageSettings),
        load_settings(UpstreamSettings),
        load_settings(S3Settings),
    )
    try:
        client = Minio(
            s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key.get_secret_value(),
            secure=s3.secure,
            region=s3.region,
            http_client=s3_http_client(),
        )
    except ValueError as exc:  # e.g. an endpoint with a scheme or path
        raise ConfigError(f"configuration error: CLIPLINE_S3_ENDPOINT: {exc}") from None
    puts = S3Puts(
        S3Endpoint(
            s3.endpoint,
            s3.access_key,
            s3.secret_key.get_secret_value(),
            s3.secure,
            s3.region,
            public_url=s3.public_url,
        )
    )
    store = S3AssetStore(
        client,
        s3.bucket,
        settings.part_size_bytes,
        s3.presign_seconds,
        puts=puts,
        retention_days=s3.retention_days,
    )
    async with (
        contextlib.aclosing(puts),
        contextlib.aclosing(
            AiohttpDownloads.for_upstream(upstream, settings.provider)
        ) as downloads,
        contextlib.aclosing(AiohttpCalls.for_upstream(upstream, settings.provider)) as calls,
        service_runtime(SERVICE, settings) as platform,
        OpenAIVideosProvider.client_for(upstream) as http,
    ):
        app = build_app(
            platform,
            OpenAIVideosProvider(http, downloads, calls, provider=settings.provider),
            store,
            settings.max_attempts,
            delete_upstream=settings.delete_upstream_after_store,
            concurrent_stores=settings.concurrent_stores,
            retention=store if s3.retention_days else None,
            retention_every=s3.retention_sweep_seconds,
        )
        await serve_app(app, settings)


if __name__ == "__main__":
    uvloop.run(main())

"""Run submitter: python -m services.submitter."""

from __future__ import annotations

import contextlib

import uvloop

from services.submitter.app import build_app
from services.submitter.settings import SubmitterSettings
from shared.config import UpstreamSettings, load_settings
from shared.provider import OpenAIVideosProvider
from shared.provider.calls import AiohttpCalls
from shared.registry import load_provider_or_exit
from shared.runtime import serve_app, service_runtime

SERVICE = "submitter"


async def main() -> None:
    settings, upstream = load_settings(SubmitterSettings), load_settings(UpstreamSettings)
    registry = load_provider_or_exit(settings.registry_path, settings.provider)
    async with (
        service_runtime(SERVICE, settings) as platform,
        OpenAIVideosProvider.client_for(upstream) as http,
        contextlib.aclosing(AiohttpCalls.for_upstream(upstream, settings.provider)) as calls,
    ):
        app = build_app(
            platform,
            OpenAIVideosProvider(http, calls=calls, provider=settings.provider),
            registry,
            settings,
        )
        await serve_app(app, settings)


if __name__ == "__main__":
    uvloop.run(main())  # the C event loop: less CPU per message than asyncio's own

"""Run poller: python -m services.poller."""

from __future__ import annotations

import contextlib

import uvloop

from services.poller.app import build_app, kv_expectations
from services.poller.domain import PollPolicy, with_webhooks
from services.poller.observe import PollerObserver
from services.poller.settings import PollerSettings
from shared.config import UpstreamSettings, load_settings
from shared.provider import OpenAIVideosProvider
from shared.provider.calls import AiohttpCalls
from shared.registry import load_provider_or_exit
from shared.runtime import serve_app, service_runtime

SERVICE = "poller"


async def main() -> None:
    settings, upstream = load_settings(PollerSettings), load_settings(UpstreamSettings)
    registry = load_provider_or_exit(settings.registry_path, settings.provider)
    policy = PollPolicy(
        default_delay=settings.poll_default_seconds,
        min_delay=settings.poll_min_seconds,
        max_delay=settings.poll_max_seconds,
        deadline=settings.deadline_seconds,
        look_tries=settings.poll_look_tries,
    )
    verifier = settings.webhook()
    if verifier is not None:
        policy = with_webhooks(policy, settings.poll_webhook_safety_seconds)
    async with (
        service_runtime(SERVICE, settings) as platform,
        OpenAIVideosProvider.client_for(upstream) as http,
        contextlib.aclosing(AiohttpCalls.for_upstream(upstream, settings.provider)) as calls,
    ):
        expectations = kv_expectations(platform, registry)
        app = build_app(
            platform,
            OpenAIVideosProvider(http, calls=calls, provider=settings.provider),
            policy,
            verifier,
            expectations=expectations,
            observer=PollerObserver(settings.provider, settings.poll_overdue_grace_seconds),
        )
        await serve_app(app, settings)


if __name__ == "__main__":
    uvloop.run(main())  # the C event loop: less CPU per message than asyncio's own

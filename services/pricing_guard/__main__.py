"""Run pricing_guard: python -m services.pricing_guard."""

from __future__ import annotations

import uvloop

from services.pricing_guard.app import build_app
from services.pricing_guard.settings import PricingSettings
from shared.config import load_settings
from shared.registry import load_provider_or_exit
from shared.runtime import serve_app, service_runtime

SERVICE = "pricing_guard"


async def main() -> None:
    settings = load_settings(PricingSettings)
    provider = load_provider_or_exit(settings.registry_path, settings.provider)
    async with service_runtime(SERVICE, settings) as platform:
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        app = build_app(platform, provider, token or None, sweep_every=settings.sweep_seconds)
        await serve_app(app, settings)


if __name__ == "__main__":
    uvloop.run(main())  # the C event loop: less CPU per message than asyncio's own

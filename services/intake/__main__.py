"""Run intake: python -m services.intake."""

from __future__ import annotations

import uvloop

from services.intake.app import build_app
from services.intake.callbacks import parse_schedule
from services.intake.settings import IntakeSettings
from shared.config import load_settings
from shared.registry import load_provider_or_exit
from shared.runtime import serve_app, service_runtime

SERVICE = "intake"


async def main() -> None:
    settings = load_settings(IntakeSettings)
    provider = load_provider_or_exit(settings.registry_path, settings.provider)
    async with service_runtime(SERVICE, settings) as platform:
        app = build_app(
            platform,
            provider,
            callbacks_allow_private=settings.callbacks_allow_private,
            callbacks_retry=parse_schedule(settings.callbacks_retry_seconds),
        )
        await serve_app(app, settings)


if __name__ == "__main__":
    uvloop.run(main())  # the C event loop: less CPU per message than asyncio's own

"""Run intake: python -m services.intake."""

from __future__ import annotations

import asyncio

from services.intake.app import build_app
from services.intake.settings import IntakeSettings
from shared.registry import load_registry
from shared.runtime import serve_app, service_runtime

SERVICE = "intake"


async def main() -> None:
    settings = IntakeSettings()
    async with service_runtime(SERVICE, settings) as rt:
        await serve_app(
            build_app(rt, load_registry(settings.registry_path), settings.default_tenant), settings
        )


if __name__ == "__main__":
    asyncio.run(main())

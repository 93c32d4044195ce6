"""Intake settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from shared.config import CommonSettings


class IntakeSettings(CommonSettings):
    http_port: int = 8080
    registry_path: Path | None = None
    default_tenant: str = "default"

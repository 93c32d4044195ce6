"""Intake settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from shared.config import CommonSettings


class IntakeSettings(CommonSettings):
    http_port: int = 8080

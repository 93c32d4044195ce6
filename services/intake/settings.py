"""Intake settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from shared.config import CommonSettings


class IntakeSettings(CommonSettings):
    http_port: int = 8080
    callbacks_allow_private: bool = False
    """CLIPLINE_CALLBACKS_ALLOW_PRIVATE: caller webhooks may go to private, loopback and
    link-local addresses (the embedded stack and tests; never a shared deployment)."""

"""Intake settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from pydantic import field_validator

from services.intake.callbacks import RETRY_SCHEDULE_SECONDS, parse_schedule
from shared.config import CommonSettings


class IntakeSettings(CommonSettings):
    http_port: int = 8080
    callbacks_allow_private: bool = False
    """CLIPLINE_CALLBACKS_ALLOW_PRIVATE: caller webhooks may go to private, loopback and
    link-local addresses (the embedded stack and tests; never a shared deployment)."""
    callbacks_retry_seconds: str = ",".join(f"{w:g}" for w in RETRY_SCHEDULE_SECONDS)
    """CLIPLINE_CALLBACKS_RETRY_SECONDS: the waits after the 1st, 2nd, ... failed attempt of a
    caller webhook; after the last, its interval again (attempts end 24 h after the first)."""

    @field_validator("callbacks_retry_seconds")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)  # a clear configuration error at start, not at the first failure
        return value

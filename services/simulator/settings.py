"""Simulator settings, read from CLIPLINE_SIM_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimulatorSettings(BaseSettings):
    """Where the simulator listens, which key it wants, and how long a job takes."""

    model_config = SettingsConfigDict(env_prefix="CLIPLINE_SIM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = None  # None: any non-empty Bearer token is accepted
    queue_seconds: float = Field(default=0.5, ge=0)
    generation_seconds: float = Field(default=6.0, ge=0)
    fps: int = Field(default=12, ge=1, le=60)
    asset_dir: Path | None = None  # on-disk asset cache in addition to the in-memory one
    poll_after_ms: int = Field(default=1000, ge=0)

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: object) -> object:
        # CLIPLINE_SIM_API_KEY= (empty) means "no key configured", not "the empty key".
        if isinstance(value, str) and not value.strip():
            return None
        return value

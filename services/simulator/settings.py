"""Simulator settings, read from CLIPLINE_SIM_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.simulator.faults import MAX_SECONDS, Faults
from services.simulator.webhooks import signing_key
from shared.logs import LogFormat

MAX_VIDEO_BYTES = 1 << 40  # 1 TiB: far beyond any real video, and a typo's guard

# Prompt patterns that end a job `failed` / `moderation_blocked`, as the real API did for real
# people and copyrighted characters (reference §3.3). Case-insensitive Python regexes.
DEFAULT_MODERATION_PATTERNS: tuple[str, ...] = (
    r"\b(taylor swift|barack obama|donald trump|elon musk|beyonc[eé]|tom cruise)\b",
    r"\b(mickey mouse|darth vader|spider-?man|pikachu|harry potter|super mario)\b",
    r"\bmoderation[-_ ]?test\b",
)


class SimulatorSettings(BaseSettings):
    """Where the simulator listens, which key it wants, how jobs behave, and how it misbehaves."""

    model_config = SettingsConfigDict(
        env_prefix="CLIPLINE_SIM_", extra="ignore", allow_inf_nan=False
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: SecretStr | None = None  # None: any non-empty Bearer token is accepted
    queue_seconds: float = Field(default=0.5, ge=0, le=MAX_SECONDS)
    generation_seconds: float = Field(default=6.0, ge=0, le=MAX_SECONDS)
    fps: int = Field(default=12, ge=1, le=60)
    asset_dir: Path | None = None  # on-disk asset cache in addition to the in-memory one
    # Throughput runs: tiny assets (a few KB) instead of full-size renders; dimensions differ.
    small_assets: bool = False
    # Large-asset mode: the `video` variant padded to exactly this many bytes (a top-level `free`
    # box after the MP4) and streamed; 0, or less than the MP4 plus 8 bytes: the MP4 as it is.
    video_bytes: int = Field(default=0, ge=0, le=MAX_VIDEO_BYTES)
    # The openai-poll-after-ms hint on a retrieve of an unfinished job; "off": no hint (whether
    # the real API sends one is unconfirmed), so a client's own poll schedule shows.
    poll_after_ms: int | None = Field(default=1000, ge=0)
    # Which API generation to imitate: "2026-03" adds 16/20 s, 1080p, edits, extensions and
    # characters; "2025-10" is the launch contract (4/8/12 s, no 1080p).
    contract: Literal["2025-10", "2026-03"] = "2026-03"
    # Per-model requests-per-minute on creates (reference §9.5): a tier 1..5, or "off".
    rate_limit_tier: Literal["1", "2", "3", "4", "5", "off"] = "1"
    rpm: dict[str, PositiveInt] = Field(
        default_factory=dict
    )  # per-model override, JSON: {"sora-2": 60}
    # Jobs kept in memory; beyond it the oldest are forgotten (404). Accounting is never trimmed.
    max_jobs: int = Field(default=200_000, ge=1)
    expires_after_seconds: int = Field(default=3600, ge=1, le=int(MAX_SECONDS))
    moderation_patterns: tuple[str, ...] = DEFAULT_MODERATION_PATTERNS
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None  # "whsec_" + base64 (Standard Webhooks)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0, le=MAX_SECONDS)
    webhook_backoff_max_seconds: float = Field(default=3600.0, ge=0, le=MAX_SECONDS)
    faults: Faults = Field(default_factory=Faults)  # JSON; changeable via PUT /control/faults
    # Journal jobs, deletes, characters and accounting here, so a restart (even a SIGKILL)
    # forgets nothing; None keeps everything in memory only.
    state_dir: Path | None = None

    @field_validator("api_key", "webhook_secret", "webhook_url", "state_dir", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        # CLIPLINE_SIM_API_KEY= (empty) means "no key configured", not "the empty key"; an empty
        # CLIPLINE_SIM_STATE_DIR means no state dir, not the current directory.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("video_bytes", mode="before")
    @classmethod
    def _blank_is_zero(cls, value: object) -> object:
        return 0 if isinstance(value, str) and not value.strip() else value

    @field_validator("poll_after_ms", mode="before")
    @classmethod
    def _off_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "off" else value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                signing_key(value.get_secret_value())
            except ValueError:
                raise ValueError("must be 'whsec_' followed by base64") from None
        return value

    @model_validator(mode="after")
    def _webhooks_need_a_secret(self) -> SimulatorSettings:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError(
                "CLIPLINE_SIM_WEBHOOK_SECRET is required with CLIPLINE_SIM_WEBHOOK_URL"
            )
        return self


class LogSettings(BaseSettings):
    """CLIPLINE_LOG_LEVEL and CLIPLINE_LOG_FORMAT, the names the services use too. The log file
    and its size cap (CLIPLINE_LOG_FILE, _MAX_BYTES, _BACKUPS) are read by shared.logs."""

    # An empty variable (a blank line in a stack's env template) means the default.
    model_config = SettingsConfigDict(env_prefix="CLIPLINE_", extra="ignore", env_ignore_empty=True)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: LogFormat = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

"""pricing_guard settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.config import CommonSettings


class PricingSettings(CommonSettings):
    http_port: int = 8081
    admin_token: SecretStr | None = None
    """CLIPLINE_ADMIN_TOKEN: the bearer token of /v1/admin/ (unset: the admin API answers 503)."""
    sweep_seconds: float = Field(default=600.0, gt=0)
    """CLIPLINE_SWEEP_SECONDS: how often each replica sweeps for ended jobs whose settlement was
    lost. A sweep reads the record of every open job (~0.3 ms of CPU each: 3 s at 10,000 jobs
    in flight), so it is a rare safety net; settlement itself follows every end event."""

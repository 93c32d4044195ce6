"""pricing_guard settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from pydantic import SecretStr

from shared.config import CommonSettings


class PricingSettings(CommonSettings):
    http_port: int = 8081
    admin_token: SecretStr | None = None
    """CLIPLINE_ADMIN_TOKEN: the bearer token of /v1/admin/ (unset: the admin API answers 503)."""

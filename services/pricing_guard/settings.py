"""pricing_guard settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from shared.config import CommonSettings


class PricingSettings(CommonSettings):
    http_port: int = 8081
    registry_path: Path | None = None
    admin_token: SecretStr | None = None
    """CLIPLINE_ADMIN_TOKEN: the bearer token of the admin API (/v1/admin/)."""

"""pricing_guard settings (CLIPLINE_* environment variables)."""

from __future__ import annotations

from shared.config import CommonSettings


class PricingSettings(CommonSettings):
    http_port: int = 8081

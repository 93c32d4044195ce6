"""submitter settings (CLIPLINE_* environment variables; upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from shared.config import CommonSettings


class SubmitterSettings(CommonSettings):
    http_port: int = 8082
    max_attempts: int = 10
    """Deliveries of one admitted job before it fails with retries_exhausted."""

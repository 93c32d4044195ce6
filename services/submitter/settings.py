"""submitter settings (CLIPLINE_* environment variables; upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from shared.config import CommonSettings


class SubmitterSettings(CommonSettings):
    http_port: int = 8082
    max_attempts: int = 10
    """Handling errors (5xx, timeouts) of one job before it fails with retries_exhausted."""
    submit_deadline_seconds: float = 6 * 3600.0
    """A job still waiting for upstream capacity (429s) this long after admission fails."""

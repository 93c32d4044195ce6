"""poller settings (CLIPLINE_* environment variables; upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from shared.config import CommonSettings


class PollerSettings(CommonSettings):
    http_port: int = 8083
    poll_default_seconds: float = 5.0
    """Delay between polls when the upstream gives no openai-poll-after-ms hint."""
    poll_min_seconds: float = 0.2
    poll_max_seconds: float = 30.0
    deadline_seconds: float = 3 * 3600.0
    """A job still not finished this long after submission fails with upstream_timeout."""

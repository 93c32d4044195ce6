"""submitter settings (CLIPLINE_* environment variables; upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from pydantic import PositiveFloat, PositiveInt

from shared.config import CommonSettings


class SubmitterSettings(CommonSettings):
    http_port: int = 8082
    max_attempts: int = 20
    """Handling errors (5xx, timeouts) of one job before it fails with retries_exhausted: 20
    with backoff capped at 8 s ride out about 2 min of continuous upstream failure (10 did,
    under the old 30 s cap)."""
    submit_deadline_seconds: float = 6 * 3600.0
    """A job still waiting for upstream capacity (429s) this long after admission fails."""
    rate_rpm: PositiveInt | None = None
    """CLIPLINE_RATE_RPM: creates per minute for every model, instead of the registry's."""
    rate_concurrency: PositiveInt | None = None
    """CLIPLINE_RATE_CONCURRENCY: creates in flight at once, instead of the registry's."""
    rate_burst_seconds: PositiveFloat = 60.0
    """CLIPLINE_RATE_BURST_SECONDS: how many seconds of the rate a quiet spell may send at
    once (60: a full minute's bucket, as OpenAI's limits and the simulator work; lower it for
    an upstream that enforces its limit over shorter intervals)."""

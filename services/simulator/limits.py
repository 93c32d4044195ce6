"""Per-model requests-per-minute limits on creates: token buckets and the 429 the API sends.

Pure: the caller passes the current monotonic time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.simulator.domain import Invalid

# Reference §9.5 (UNCONFIRMED, third-party): sora-2 / sora-2-pro RPM per usage tier.
TIER_RPM: dict[str, dict[str, int]] = {
    "1": {"sora-2": 25, "sora-2-pro": 10},
    "2": {"sora-2": 50, "sora-2-pro": 25},
    "3": {"sora-2": 125, "sora-2-pro": 50},
    "4": {"sora-2": 200, "sora-2-pro": 75},
    "5": {"sora-2": 375, "sora-2-pro": 150},
}
WINDOW_SECONDS = 60.0
ORGANIZATION = "org-simulator"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request's fate, with what the `x-ratelimit-*` headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the bucket is full again
    retry_after_seconds: float  # until one request is allowed (0 when allowed)


class Bucket:
    """`limit` requests, refilled continuously over a minute (a full bucket allows a burst)."""

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit)
        self._updated = now

    def take(self, now: float) -> Verdict:
        rate = self.limit / WINDOW_SECONDS
        self._tokens = min(float(self.limit), self._tokens + (now - self._updated) * rate)
        self._updated = now
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        wait = 0.0 if allowed else (1 - self._tokens) / rate
        return Verdict(
            allowed=allowed,
            limit=self.limit,
            remaining=int(self._tokens),
            reset_seconds=(self.limit - self._tokens) / rate,
            retry_after_seconds=wait,
        )


def limits_for(tier: str, overrides: dict[str, int]) -> dict[str, int] | None:
    """RPM per base model, or None when limits are off."""
    if tier == "off":
        return None
    return {**TIER_RPM[tier], **overrides}


def duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `2.4s`, `1m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def headers(verdict: Verdict) -> dict[str, str]:
    found = {
        "x-ratelimit-limit-requests": str(verdict.limit),
        "x-ratelimit-remaining-requests": str(verdict.remaining),
        "x-ratelimit-reset-requests": duration(verdict.reset_seconds),
    }
    if not verdict.allowed:
        found.update(retry_headers(verdict.retry_after_seconds))
    return found


def retry_headers(seconds: float) -> dict[str, str]:
    """`retry-after` is whole seconds and at least 1 ([SPEC] TooManyRequests)."""
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def exceeded(model: str, verdict: Verdict) -> Invalid:
    """The common OpenAI 429 body (reference §9.4; its exact text for videos is UNCONFIRMED)."""
    return Invalid(
        f"Rate limit reached for {model} in organization {ORGANIZATION} on requests per min "
        f"(RPM): Limit {verdict.limit}, Used {verdict.limit}, Requested 1. Please try again in "
        f"{duration(verdict.retry_after_seconds)}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        type="requests",
        code="rate_limit_exceeded",
    )


def injected(operation: str) -> Invalid:
    """A 429 injected by the fault plan rather than earned by the client."""
    return Invalid(
        f"Rate limit reached for requests to {operation} in organization {ORGANIZATION}. "
        "Please try again later.",
        type="requests",
        code="rate_limit_exceeded",
    )

"""Submission decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RATE_LIMIT_DELAY = 1.0
MAX_RATE_LIMIT_DELAY = 120.0


@dataclass(frozen=True, slots=True)
class Submit:
    """Create the upstream job."""


@dataclass(frozen=True, slots=True)
class Resend:
    """Already created upstream and not yet picked up: announce it again, create nothing."""

    upstream_id: str


@dataclass(frozen=True, slots=True)
class Skip:
    """The job ended or moved on meanwhile; nothing to do."""


@dataclass(frozen=True, slots=True)
class Expired:
    """Admitted too long ago without getting upstream (a rate limit that never lifted)."""

    detail: str


def plan(
    status: str | None,
    upstream_id: str | None,
    terminal: bool,
    *,
    waited: float,
    deadline: float,
) -> Submit | Resend | Skip | Expired:
    """What to do with an admitted job given its recorded state, `waited` s after admission."""
    if status is None or terminal:
        return Skip()
    if upstream_id:
        return Resend(upstream_id) if status == "submitted" else Skip()
    if status not in ("admitted", "submitting"):
        return Skip()
    # "submitting" with no upstream id: a create may have reached the upstream before a crash
    # or a dropped response. Until reconciliation lands (list + adopt), it is created again.
    if waited > deadline:
        return Expired(f"not submitted within {deadline:.0f}s of admission")
    return Submit()


def rate_limit_delay(retry_after_seconds: float | None) -> float:
    """How long to wait after a 429: the server's hint, bounded, else a default."""
    if retry_after_seconds is None or retry_after_seconds <= 0:
        return DEFAULT_RATE_LIMIT_DELAY
    return min(retry_after_seconds, MAX_RATE_LIMIT_DELAY)

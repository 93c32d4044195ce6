"""Polling decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PollPolicy:
    default_delay: float
    min_delay: float
    max_delay: float
    deadline: float

    def clamp(self, delay: float | None) -> float:
        """A delay (server hint or default) within [min_delay, max_delay]."""
        chosen = self.default_delay if delay is None else delay
        return min(self.max_delay, max(self.min_delay, chosen))


@dataclass(frozen=True, slots=True)
class Pending:
    progress: int
    delay: float
    upstream_status: str = "queued"


@dataclass(frozen=True, slots=True)
class Generated:
    produced_seconds: int | None = None
    """What the upstream says it produced: what the job is billed for."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The deadline passed; the upstream job may still finish (and bill)."""

    reason: str
    detail: str


def next_poll_delay(policy: PollPolicy, server_hint: float | None) -> float:
    """The server's openai-poll-after-ms when given, else the default; clamped to the policy."""
    return policy.clamp(server_hint)


def overdue(policy: PollPolicy, waited: float) -> TimedOut | None:
    """A job unfinished `waited` seconds after submission times out once past the deadline."""
    if waited > policy.deadline:
        return TimedOut("upstream_timeout", f"not finished {waited:.0f}s after submission")
    return None


def produced_seconds(seconds: str | None) -> int | None:
    """The upstream's `seconds` (a string on the wire); None when absent or not a positive
    whole number (then the job is billed for the seconds it asked for)."""
    if seconds is None or not seconds.strip().isdigit():
        return None
    value = int(seconds)
    return value if 0 < value <= 3600 else None


def assess(
    policy: PollPolicy,
    *,
    status: str,
    progress: int,
    error: tuple[str, str] | None,
    waited: float,
    server_hint: float | None,
    seconds: str | None = None,
) -> Pending | Generated | Failed | TimedOut:
    """What an upstream status means for the job, `waited` seconds after submission."""
    if status == "completed":
        return Generated(produced_seconds(seconds))
    if status == "failed":
        code, message = error or ("upstream_failed", "upstream reported failure without detail")
        return Failed(code, message)
    if status not in ("queued", "in_progress"):
        return Failed("upstream_protocol", f"unknown upstream status {status!r}")
    if (late := overdue(policy, waited)) is not None:
        return late
    return Pending(max(0, min(99, progress)), next_poll_delay(policy, server_hint), status)

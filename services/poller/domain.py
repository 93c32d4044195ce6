"""Polling decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from dataclasses import dataclass, replace


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


def with_webhooks(policy: PollPolicy, safety_delay: float) -> PollPolicy:
    """Polling as the safety net of webhooks: every next poll `safety_delay` away, whatever the
    upstream hints (its openai-poll-after-ms is meant for clients that poll alone)."""
    return replace(
        policy,
        default_delay=safety_delay,
        min_delay=safety_delay,
        max_delay=max(policy.max_delay, safety_delay),
    )


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


@dataclass(frozen=True, slots=True)
class Throttled:
    """The upstream answered 429: look again after `delay` (no error budget spent)."""

    delay: float


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


MAX_VIDEO_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class VideoEvent:
    """What a verified webhook says: only which video to look at (its status is not trusted)."""

    event_id: str
    type: str
    video_id: str


@dataclass(frozen=True, slots=True)
class Malformed:
    detail: str


def video_event(payload: object) -> VideoEvent | Malformed:
    """The event in a webhook's JSON body (`{"id", "type": "video.*", "data": {"id"}}`)."""
    if not isinstance(payload, dict):
        return Malformed("the body is not a JSON object")
    event_id, kind, data = payload.get("id"), payload.get("type"), payload.get("data")
    if not isinstance(event_id, str) or not event_id:
        return Malformed("no event id (`id`)")
    if not isinstance(kind, str) or not kind.startswith("video."):
        return Malformed(f"not a video event (`type` {kind!r:.60})")
    video_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(video_id, str) or not 0 < len(video_id) <= MAX_VIDEO_ID_CHARS:
        return Malformed("no video id (`data.id`, at most 256 characters)")
    return VideoEvent(event_id, kind, video_id)

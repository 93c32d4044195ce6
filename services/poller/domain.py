"""Polling decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class PollPolicy:
    default_delay: float
    """The longest first step of the backoff past a job's expected completion."""
    min_delay: float
    max_delay: float
    """The cap of the backoff (with webhooks: at least the safety interval)."""
    deadline: float
    safety_delay: float | None = None
    """Webhooks on: polling is their safety net, this far past the expected completion and
    then at this interval (None: polling alone follows jobs)."""
    look_tries: int = 1
    """Retrieves one look may make when the upstream fails it (see `look_again`); 1: none
    repeated, the failure goes to the poll's error budget or the webhook's sender at once."""

    def clamp(self, delay: float | None) -> float:
        """A delay (server hint or default) within [min_delay, max_delay]."""
        chosen = self.default_delay if delay is None else delay
        return min(self.max_delay, max(self.min_delay, chosen))


def with_webhooks(policy: PollPolicy, safety_delay: float) -> PollPolicy:
    """Polling as the safety net of webhooks (schedule.after_look): looks only `safety_delay`
    past the expected completion, then at that interval."""
    return replace(policy, safety_delay=safety_delay)


@dataclass(frozen=True, slots=True)
class Pending:
    progress: int
    hint: float | None = None
    """The upstream's openai-poll-after-ms, in seconds (None: not sent)."""
    upstream_status: str = "queued"


@dataclass(frozen=True, slots=True)
class Generated:
    produced_seconds: int | None = None
    """What the upstream says it produced: what the job is billed for."""
    took: float | None = None
    """How long the upstream took to generate it, by its own timestamps (None: not told)."""
    expires_at: int | None = None
    """When the upstream's copy of its assets expires (epoch seconds; None: not told)."""


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


LOOK_RETRY_SECONDS = 0.25
"""The first wait before a failed retrieve is tried again within one look (then doubled)."""
MAX_LOOK_RETRY_AFTER = 2.0
"""A 429 asking for longer than this is not waited out within a look: the look ends Throttled
(the poll's durable timer, or the webhook's sender, comes back after the asked time)."""


def look_again(
    policy: PollPolicy, tries: int, *, rate_limited: bool, retry_after: float | None
) -> float | None:
    """After `tries` failed retrieves within one look: seconds to wait before the next, or None
    to end the look with the failure. A retrieve is a read, safe to repeat; done within the
    look, a 5xx or a lost answer costs a quarter of a second, not a webhook sender's backoff
    (1, 2, 4 s...) or the poll's. A 429 is tried again after exactly the time it asked for,
    when it asked for a short one; one that asked for nothing, or long, ends the look."""
    if tries >= policy.look_tries:
        return None
    if rate_limited:
        if retry_after is None or not math.isfinite(retry_after):
            return None
        return max(0.0, retry_after) if retry_after <= MAX_LOOK_RETRY_AFTER else None
    return LOOK_RETRY_SECONDS * 2.0 ** (tries - 1)


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


def generation_took(created_at: int | None, completed_at: int | None) -> float | None:
    """A finished video's generation time by the upstream's own clock (None: not told)."""
    if created_at is None or completed_at is None or completed_at < created_at:
        return None
    return float(completed_at - created_at)


@dataclass(frozen=True, slots=True)
class Seen:
    """One retrieve of the upstream video: what `assess` judges."""

    status: str
    progress: int = 0
    error: tuple[str, str] | None = None
    seconds: str | None = None
    created_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None


def assess(
    policy: PollPolicy, seen: Seen, *, waited: float, now: float, server_hint: float | None
) -> Pending | Generated | Failed | TimedOut:
    """What the upstream's video means for the job, `waited` seconds after submission, at
    `now` (epoch seconds, to judge `expires_at`)."""
    if seen.status == "completed":
        if seen.expires_at is not None and seen.expires_at <= now:
            return Failed(
                "asset_expired", f"generated, but its assets expired at {seen.expires_at}"
            )
        took = generation_took(seen.created_at, seen.completed_at)
        return Generated(produced_seconds(seen.seconds), took, seen.expires_at)
    if seen.status == "failed":
        code, message = seen.error or (
            "upstream_failed",
            "upstream reported failure without detail",
        )
        return Failed(code, message)
    if seen.status == "expired":  # not in the contract; the reference says to expect it
        return Failed("asset_expired", "the upstream says the video expired")
    if seen.status in ("cancelled", "canceled"):
        return Failed("upstream_cancelled", f"the upstream says the video was {seen.status}")
    if seen.status not in ("queued", "in_progress"):
        return Failed("upstream_protocol", f"unknown upstream status {seen.status!r}")
    if (late := overdue(policy, waited)) is not None:
        return late
    return Pending(max(0, min(99, seen.progress)), server_hint, seen.status)


PROGRESS_STEP = 10
"""Progress is announced in steps of this many points (and when generation starts)."""


def worth_announcing(*, started: bool, recorded: int, progress: int) -> bool:
    """Whether a job's progress changed meaningfully: generation seen to start (`started`
    False: the job was only `submitted` until now), or PROGRESS_STEP points more than recorded."""
    return not started or progress >= recorded + PROGRESS_STEP


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

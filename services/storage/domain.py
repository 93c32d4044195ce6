"""Storage decisions: object keys, metadata, verification, outage waits, job timings and
retention (which objects are due, which lifecycle rules to write).
Pure: no I/O, no clock, no logging."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from urllib.parse import unquote

EXTENSIONS = {"video": "mp4", "thumbnail": "webp", "spritesheet": "jpg"}
CONTENT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What storage writes about a job: where its objects go and what they say of it."""

    job_id: str
    tenant: str
    accepted_at: datetime
    """The job's `accepted` time (its record history): the day in its keys, the same on
    every redelivery."""
    model: str
    size: str
    seconds: int
    prompt: str
    cost_micros: int


def job_prefix(tenant: str, job_id: str, accepted_at: datetime) -> str:
    """Where a job's objects live: <tenant>/<yyyy>/<mm>/<dd>/<job_id>/ (the UTC day accepted)."""
    day = accepted_at.astimezone(UTC) if accepted_at.tzinfo else accepted_at.replace(tzinfo=UTC)
    return f"{tenant}/{day:%Y/%m/%d}/{job_id}/"


def object_key(tenant: str, job_id: str, variant: str, accepted_at: datetime) -> str:
    """Where a variant lives: <tenant>/<yyyy>/<mm>/<dd>/<job_id>/<variant>.<ext>."""
    return f"{job_prefix(tenant, job_id, accepted_at)}{variant}.{EXTENSIONS[variant]}"


def object_metadata(facts: JobFacts) -> dict[str, str]:
    """User metadata of every object of the job (sent as x-amz-meta-<name>). The prompt is
    kept as its sha256 only: metadata is ASCII, bounded, and readable by whoever lists."""
    return {
        "job-id": facts.job_id,
        "tenant": facts.tenant,
        "model": facts.model,
        "size": facts.size,
        "seconds": str(facts.seconds),
        "prompt-sha256": hashlib.sha256(facts.prompt.encode()).hexdigest(),
        "cost-micros": str(facts.cost_micros),
    }


def length_problem(received: int, declared: int | None) -> str | None:
    """Why a download of `received` bytes is not the whole variant the upstream declared
    (its Content-Length), or None when it is (or nothing was declared)."""
    if declared is None or received == declared:
        return None
    return f"received {received} of {declared} bytes"


def still_stored(
    recorded_size: int, stat_size: int | None, stat_metadata: Mapping[str, str], job_id: str
) -> bool:
    """Whether an object an earlier delivery recorded as stored is still that object (present,
    the recorded size, this job's metadata), so it need not be fetched again."""
    return stat_size == recorded_size and stat_metadata.get("job-id") == job_id


ASSUMED_ASSET_LIFETIME = timedelta(hours=1)
"""How long the upstream keeps a video's assets after generating it, when it does not say
(the Videos API keeps them about an hour)."""
OUTAGE_FIRST_WAIT = 1.0
OUTAGE_MAX_WAIT = 30.0


CONCURRENT_STORES = 4
"""How many jobs one storage process stores at once, unless configured otherwise."""


def expires(event_expires_at: datetime | None, generated_at: datetime | None) -> datetime | None:
    """When the upstream's copy of a job's assets expires: the `expires_at` the upstream gave,
    else ASSUMED_ASSET_LIFETIME after generation; None when neither is known."""
    if event_expires_at is not None:
        return event_expires_at
    return None if generated_at is None else generated_at + ASSUMED_ASSET_LIFETIME


@dataclass(frozen=True, slots=True)
class WaitForStore:
    """S3 is unreachable and the upstream copy is still there: look again after `delay`."""

    delay: float


@dataclass(frozen=True, slots=True)
class AssetsExpired:
    """S3 stayed unreachable until the upstream's copy expired: nothing left to store."""

    detail: str


def outage(
    *,
    now: datetime,
    storing_since: datetime,
    expires_at: datetime | None,
    generated_at: datetime | None,
) -> WaitForStore | AssetsExpired:
    """What a job does while S3 cannot be reached: wait (backing off with how long it has been
    storing, a quarter of it, 1 s to 30 s, never past the expiry), or fail once the upstream's
    copy has expired (its `expires_at`, else ASSUMED_ASSET_LIFETIME after generation)."""
    deadline = expires(expires_at, generated_at)
    if deadline is not None and now >= deadline:
        at = deadline.astimezone(UTC).isoformat(timespec="seconds")
        return AssetsExpired(f"S3 was unreachable until the upstream's assets expired at {at}")
    waited = max(0.0, (now - storing_since).total_seconds())
    delay = min(OUTAGE_MAX_WAIT, max(OUTAGE_FIRST_WAIT, waited / 4))
    if deadline is not None:
        delay = min(delay, max(0.1, (deadline - now).total_seconds()))  # look at the expiry
    return WaitForStore(round(delay, 3))


@dataclass(frozen=True, slots=True)
class Timings:
    accepted_at: datetime
    submitted_at: datetime | None
    generated_at: datetime | None
    completed_at: datetime
    queue_seconds: float | None
    generation_seconds: float | None
    storage_seconds: float | None
    total_seconds: float


def _span(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def timings(history: Mapping[str, datetime], completed_at: datetime) -> Timings:
    """Milestones and durations from the job's status history."""
    accepted = history.get("accepted", completed_at)
    submitted, generated = history.get("submitted"), history.get("generated")
    return Timings(
        accepted_at=accepted,
        submitted_at=submitted,
        generated_at=generated,
        completed_at=completed_at,
        queue_seconds=_span(accepted, submitted),
        generation_seconds=_span(submitted, generated),
        storage_seconds=_span(generated, completed_at),
        total_seconds=_span(accepted, completed_at) or 0.0,
    )


# Retention (CLIPLINE_S3_RETENTION_DAYS): a lifecycle rule where the S3 server enforces one,
# else a sweeper. Both delete by the same policy; these functions decide, the adapter acts.

RETENTION_RULE_ID = "clipline-retention"
"""The ID of clipline's lifecycle rule: the only rule of the bucket storage writes or replaces."""
_KEY_LAYOUT = re.compile(
    r"^[a-z0-9][a-z0-9_-]{0,62}/(\d{4})/(\d{2})/(\d{2})/[^/]+/([a-z]+)\.([a-z0-9]+)$"
)
R = TypeVar("R")


def key_day(key: str) -> date | None:
    """The UTC day in a key of clipline's layout (<tenant>/<yyyy>/<mm>/<dd>/<job_id>/
    <variant>.<ext>, a known variant with its extension), None for any other key."""
    m = _KEY_LAYOUT.match(key)
    if m is None or EXTENSIONS.get(m[4]) != m[5]:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def retention_due(key: str, retention_days: int, now: datetime) -> bool:
    """Whether the sweeper deletes the object at `key`: its key is of clipline's layout and
    `retention_days` whole days have passed since the end of the day in it (the UTC day the
    job was accepted), i.e. from midnight UTC starting day + 1 + retention_days. That is when
    an S3 lifecycle rule of the same days expires an object written that day (S3 rounds its
    expiry up to the next midnight UTC). Never for retention 0 (keep forever) or other keys."""
    if retention_days <= 0:
        return False
    day = key_day(key)
    if day is None:
        return False
    due = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=retention_days + 1)
    return now >= due


def with_retention_rule(rules: Sequence[R], ours: R, rule_id: Callable[[R], str | None]) -> list[R]:
    """The bucket's lifecycle rules with `ours` instead of any earlier rule with its ID (in that
    rule's place), every other rule kept as it was and where it was; `ours` last when new."""
    mine = rule_id(ours)
    out: list[R] = []
    placed = False
    for rule in rules:
        if rule_id(rule) != mine:
            out.append(rule)
        elif not placed:
            out.append(ours)
            placed = True
    if not placed:
        out.append(ours)
    return out


@dataclass(frozen=True, slots=True)
class RuleView:
    """What storage checks of a lifecycle rule the server returns."""

    rule_id: str | None
    enabled: bool
    prefix: str | None
    expiration_days: int | None


def retention_rule_held(rules: Iterable[RuleView], retention_days: int) -> bool:
    """Whether the server's lifecycle configuration holds clipline's rule as written: enabled,
    for the whole bucket (no prefix), expiring after `retention_days`."""
    return any(
        r.rule_id == RETENTION_RULE_ID
        and r.enabled
        and not r.prefix
        and r.expiration_days == retention_days
        for r in rules
    )


_EXPIRATION_RULE = re.compile(r'rule-id="([^"]*)"')


def expires_by_rule(expiration_header: str | None, rule_id: str = RETENTION_RULE_ID) -> bool:
    """Whether an object's `x-amz-expiration` header (`expiry-date="...", rule-id="..."`,
    the rule ID URL-encoded) says the server will expire it by `rule_id`: how S3 and MinIO
    show that they apply a lifecycle rule to an object. A server that stores the rule but says
    nothing of it for the object is not taken at its word."""
    if not expiration_header:
        return False
    m = _EXPIRATION_RULE.search(expiration_header)
    return m is not None and unquote(m[1]) == rule_id


FIRST_SWEEP_WITHIN = 60.0
"""The first retention pass runs within this many seconds of the start (at most `every`)."""
SWEEP_JITTER = 0.1


def sweep_delay(every: float, fraction: float, *, first: bool) -> float:
    """Seconds until the next retention pass, `fraction` a random number in [0, 1): the first
    soon after the start, anywhere in min(every, FIRST_SWEEP_WITHIN); later ones `every`
    ± SWEEP_JITTER of it. Replicas started together so list the bucket at different moments
    (they would not conflict anyway: a delete of a deleted object is a no-op)."""
    if first:
        return min(every, FIRST_SWEEP_WITHIN) * fraction
    return every * (1 - SWEEP_JITTER + 2 * SWEEP_JITTER * fraction)

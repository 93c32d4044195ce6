"""Storage decisions: object keys, metadata, verification, outage waits and job timings.
Pure: no I/O, no clock, no logging."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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

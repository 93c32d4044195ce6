"""Storage decisions: object keys and job timings. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

EXTENSIONS = {"video": "mp4", "thumbnail": "webp", "spritesheet": "jpg"}
CONTENT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}


def object_key(tenant: str, job_id: str, variant: str) -> str:
    """Where a variant lives: <tenant>/<job_id>/<variant>.<ext> (one prefix per tenant)."""
    return f"{tenant}/{job_id}/{variant}.{EXTENSIONS[variant]}"


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

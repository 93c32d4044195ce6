"""What intake's use cases touch: job store, input images, emitter, provider, image prober,
API keys, the jobs' event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from services.intake.domain import ImageFacts
from shared.apikeys import ApiKeys
from shared.inputs import InputStore
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import ProviderSpec

ImageProbe = Callable[[bytes], ImageFacts | None]
"""Reads what image bytes really are (blocking: run in a thread)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a job as the jobs stream holds it."""

    seq: int
    """Its stream sequence: the SSE id a client resumes after."""
    subject: str
    data: str


class JobEvents(Protocol):
    """A job's events, in stream order: the stored ones after a sequence, then each new one."""

    def follow(
        self, tenant: str, job_id: str, after: int, idle_seconds: float
    ) -> AsyncIterator[StoredEvent | None]:
        """Every event of the job after stream sequence `after`, then live ones as they come;
        None after each `idle_seconds` without one (time for a heartbeat). Endless: the caller
        stops reading."""
        ...


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    inputs: InputStore
    emit: Emit
    provider: ProviderSpec
    probe: ImageProbe
    keys: ApiKeys
    events: JobEvents | None = None
    """None: this intake cannot follow events (GET /v1/jobs/{id}/events answers 503)."""

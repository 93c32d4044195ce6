"""What intake's use cases touch: job store, input images, emitter, provider, image prober,
API keys, storage's assets request, the jobs' event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.intake.callbacks_send import Sender
from services.intake.domain import ImageFacts
from shared.apikeys import ApiKeys
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1
from shared.inputs import InputStore
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import ProviderSpec

ImageProbe = Callable[[bytes], ImageFacts | None]
"""Reads what image bytes really are (blocking: run in a thread)."""


class Assets(Protocol):
    """Storage's assets request: presigned URLs of a job's stored variants, or their deletion.
    Never raises: storage unreachable (or no storage running) is an `unavailable` reply."""

    async def ask(self, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1: ...


class NoAssets:
    """No storage to ask (tests of the rest of intake): every request is `unavailable`."""

    async def ask(self, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1:
        return AssetsReplyV1(job_id=request.job_id, error="unavailable", detail="no storage")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event of a job as the jobs stream holds it."""

    seq: int
    """Its stream sequence: the SSE id a client resumes after."""
    subject: str
    data: str
    headers: Mapping[str, str] | None = None
    """Its NATS headers (`traceparent`: the trace the event was emitted in)."""
    stored_at: datetime | None = None
    """When the stream stored it (the server's clock)."""


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
    assets: Assets = field(default_factory=NoAssets)
    events: JobEvents | None = None
    """None: this intake cannot follow events (GET /v1/jobs/{id}/events answers 503)."""
    callbacks: Sender | None = None
    """Caller webhooks (services/intake/callbacks_send.py); None: a request naming a
    callback_url is refused."""

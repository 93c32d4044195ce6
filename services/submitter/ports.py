"""What the submitter's handlers touch: jobs, input images, the upstream index and provider."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from services.submitter.rates import Granted, Priority, RateState, Wait
from shared.inputs import InputStore
from shared.jobstore import JobStore, UpstreamIndex
from shared.outcomes import Emit
from shared.provider import VideoProvider


class RateShaper(Protocol):
    """Slots for upstream creates under the provider's limits, shared by every replica."""

    async def acquire(
        self, model: str, job_id: str, priority: Priority, lease: float
    ) -> Granted | Wait: ...

    async def release(self, model: str, job_id: str) -> None: ...

    async def throttle(self, model: str, retry_after: float | None) -> None:
        """The upstream answered 429 anyway: slow everyone down."""
        ...


class Unshaped:
    """No shaping: every create may go at once (tests of other behaviour; a provider whose
    limits are not clipline's business)."""

    async def acquire(
        self, model: str, job_id: str, priority: Priority, lease: float
    ) -> Granted | Wait:
        return Granted(0.0, RateState(tat=0.0))

    async def release(self, model: str, job_id: str) -> None:
        return None

    async def throttle(self, model: str, retry_after: float | None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    inputs: InputStore
    upstream: UpstreamIndex
    provider: VideoProvider
    emit: Emit
    submit_deadline: float
    """Seconds after admission after which a job still not created upstream times out."""
    rates: RateShaper = field(default_factory=Unshaped)
    provider_name: str = "openai"
    """The registry's name of the provider: labels the rate-limit metrics."""

"""What the submitter's handlers touch: jobs, input images, the upstream index and provider."""

from __future__ import annotations

from dataclasses import dataclass

from shared.inputs import InputStore
from shared.jobstore import JobStore, UpstreamIndex
from shared.outcomes import Emit
from shared.provider import VideoProvider


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    inputs: InputStore
    upstream: UpstreamIndex
    provider: VideoProvider
    emit: Emit
    submit_deadline: float
    """Seconds after admission after which a job still not created upstream times out."""

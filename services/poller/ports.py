"""What the poller's handlers touch: the job store, its emitter, the provider, its policy."""

from __future__ import annotations

from dataclasses import dataclass

from services.poller.domain import PollPolicy
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.provider import VideoProvider


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: VideoProvider
    policy: PollPolicy

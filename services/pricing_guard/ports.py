"""What pricing_guard's handlers touch: the job store, its emitter and its provider."""

from __future__ import annotations

from dataclasses import dataclass

from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import ProviderSpec


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: ProviderSpec

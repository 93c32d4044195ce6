"""What pricing_guard's handlers touch: the job store, its emitter and the model registry."""

from __future__ import annotations

from dataclasses import dataclass

from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import Registry


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    registry: Registry

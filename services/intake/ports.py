"""What intake's use cases touch: job store, input images, emitter, provider, image prober,
API keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.intake.domain import ImageFacts
from shared.apikeys import ApiKeys
from shared.inputs import InputStore
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import ProviderSpec

ImageProbe = Callable[[bytes], ImageFacts | None]
"""Reads what image bytes really are (blocking: run in a thread)."""


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    inputs: InputStore
    emit: Emit
    provider: ProviderSpec
    probe: ImageProbe
    keys: ApiKeys

"""What the registry holds: providers, their models, limits and lifecycle. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

Status = Literal["live", "deprecated", "retired"]
STATUSES: tuple[Status, ...] = ("live", "deprecated", "retired")


class RegistryError(ValueError):
    """The registry file is malformed, or names no such provider."""


@dataclass(frozen=True, slots=True)
class Generation:
    """How long the upstream takes to generate a video, as a first guess: `base_seconds` plus
    `per_video_second` for each second of video. The poller learns the real durations from
    finished jobs; this only seeds its schedule (first poll near the expected completion)."""

    base_seconds: float = 60.0
    per_video_second: float = 10.0

    def expected_seconds(self, video_seconds: int) -> float:
        return self.base_seconds + self.per_video_second * video_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """What one model accepts at one provider, its price per second for each priced size, its
    rate limits there and whether it still runs."""

    name: str
    sizes: frozenset[str]
    seconds: frozenset[int]
    price_micros_per_second: dict[str, int] = field(hash=False)
    aliases: frozenset[str] = frozenset()
    rpm: int
    """Creates per minute: the model's own limit, else its provider's default."""
    concurrency: int
    """Jobs upstream at once: the model's own cap, else its provider's default."""
    status: Status = "live"
    shutdown: date | None = None
    replacement: str | None = None
    generation: Generation = Generation()
    """Expected generation time at this provider (the seed of the poller's schedule)."""

    def retired_on(self, today: date) -> bool:
        """Whether the model no longer runs on `today`: from its shutdown date on (whatever its
        status), or on any day when it is `retired` without a date. A retired model with a date
        ran until that date, as the record of when it stopped."""
        if self.shutdown is not None:
            return self.shutdown <= today
        return self.status == "retired"


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider's models by name or alias. Pure data: safe to use in domain code."""

    name: str
    description: str
    rpm: int
    concurrency: int
    models: dict[str, ModelSpec] = field(hash=False)
    generation: Generation = Generation()
    """The provider's default expected generation time (a model may set its own)."""

    def model(self, name: str) -> ModelSpec | None:
        if name in self.models:
            return self.models[name]
        for spec in self.models.values():
            if name in spec.aliases:
                return spec
        return None

    def price_micros_per_second(self, model: str, size: str) -> int | None:
        """The price for model/size, or None when the combination is unpriced."""
        spec = self.model(model)
        if spec is None:
            return None
        return spec.price_micros_per_second.get(size)


@dataclass(frozen=True, slots=True)
class Registry:
    """Every provider clipline knows; a deployment uses one (CLIPLINE_PROVIDER)."""

    providers: dict[str, ProviderSpec] = field(hash=False)

    def provider(self, name: str) -> ProviderSpec:
        if name not in self.providers:
            known = ", ".join(sorted(self.providers))
            raise RegistryError(f"unknown provider {name!r}; known providers: {known}")
        return self.providers[name]

"""Pricing and admission decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from shared.registry import ModelSpec, ProviderSpec


@dataclass(frozen=True, slots=True)
class Admitted:
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # machine-readable, e.g. "unpriced"
    detail: str  # one human sentence


def retired_detail(model: str, spec: ModelSpec, provider: str) -> str:
    """Why a retired model (as the job named it) is refused, and what to use instead."""
    when = f" on {spec.shutdown.isoformat()}" if spec.shutdown is not None else ""
    instead = f"use {spec.replacement}" if spec.replacement else "no replacement was named"
    return f"{model} was retired by {provider}{when}; {instead}"


def price(
    provider: ProviderSpec, model: str, size: str, seconds: int, today: date
) -> Admitted | Refused:
    """Cost of a job in integer micro-dollars. A model its provider has retired by `today` is
    refused before any price is looked at; a model/size without a price is refused, never $0."""
    spec = provider.model(model)
    if spec is not None and spec.retired_on(today):
        return Refused("model_retired", retired_detail(model, spec, provider.name))
    per_second = provider.price_micros_per_second(model, size)
    if per_second is None:
        return Refused("unpriced", f"no price for {model} at {size}; refusing to run it unpriced")
    if seconds <= 0:
        return Refused("invalid_request", f"seconds must be positive, got {seconds}")
    return Admitted(per_second * seconds)


def final_charge(completed: bool, cost_micros: int | None) -> int:
    """What a finished job costs: its price when completed; nothing when it failed."""
    return (cost_micros or 0) if completed else 0

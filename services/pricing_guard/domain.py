"""Pricing and admission decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from dataclasses import dataclass

from shared.registry import ProviderSpec


@dataclass(frozen=True, slots=True)
class Admitted:
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # machine-readable, e.g. "unpriced"
    detail: str  # one human sentence


def price(provider: ProviderSpec, model: str, size: str, seconds: int) -> Admitted | Refused:
    """Cost of a job in integer micro-dollars; a model/size without a price is refused, never $0."""
    per_second = provider.price_micros_per_second(model, size)
    if per_second is None:
        return Refused("unpriced", f"no price for {model} at {size}; refusing to run it unpriced")
    if seconds <= 0:
        return Refused("invalid_request", f"seconds must be positive, got {seconds}")
    return Admitted(per_second * seconds)


def final_charge(completed: bool, cost_micros: int | None) -> int:
    """What a finished job costs: its price when completed; nothing when it failed."""
    return (cost_micros or 0) if completed else 0

"""The model registry: models, sizes, durations and prices (the data is a file, not code)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ModelSpec", "Registry", "RegistryError", "load_registry"]


class RegistryError(ValueError):
    """The registry file is malformed."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What one upstream model accepts, and its price per second for each priced size."""

    name: str
    sizes: frozenset[str]
    seconds: frozenset[int]
    price_micros_per_second: dict[str, int] = field(hash=False)
    aliases: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Registry:
    """ModelSpecs by name or alias. Pure data: safe to use in domain code."""

    models: dict[str, ModelSpec]

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


def _parse_model(name: str, raw: Any) -> ModelSpec:
    if not isinstance(raw, dict):
        raise RegistryError(f"model {name!r}: expected a table")
    sizes = raw.get("sizes")
    seconds = raw.get("seconds")
    prices = raw.get("price_micros_per_second", {})
    aliases = raw.get("aliases", [])
    if not isinstance(sizes, list) or not all(isinstance(s, str) for s in sizes) or not sizes:
        raise RegistryError(f"model {name!r}: 'sizes' must be a non-empty list of strings")
    if not isinstance(seconds, list) or not seconds:
        raise RegistryError(f"model {name!r}: 'seconds' must be a non-empty list of integers")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in seconds):
        raise RegistryError(f"model {name!r}: 'seconds' must be positive integers")
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise RegistryError(f"model {name!r}: 'aliases' must be a list of strings")
    if not isinstance(prices, dict):
        raise RegistryError(f"model {name!r}: 'price_micros_per_second' must be a table")
    for size, price in prices.items():
        if size not in sizes:
            raise RegistryError(f"model {name!r}: price for unknown size {size!r}")
        if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
            # Money is integer micro-dollars; a zero or float price is a data error, never "free".
            raise RegistryError(f"model {name!r}: price for {size!r} must be a positive integer")
    return ModelSpec(
        name=name,
        sizes=frozenset(sizes),
        seconds=frozenset(seconds),
        price_micros_per_second=dict(prices),
        aliases=frozenset(aliases),
    )


def parse_registry(text: str) -> Registry:
    """Parse registry TOML text; raises RegistryError with the offending model on bad data."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"registry is not valid TOML: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise RegistryError("registry has no [models] table")
    return Registry({name: _parse_model(name, raw) for name, raw in models.items()})


def load_registry(path: Path | None = None) -> Registry:
    """Load the registry from `path`, or the one shipped with clipline."""
    if path is not None:
        return parse_registry(path.read_text(encoding="utf-8"))
    text = resources.files(__package__).joinpath("models.toml").read_text(encoding="utf-8")
    return parse_registry(text)


def load_registry_or_exit(path: Path | None = None) -> Registry:
    """For process entry points: a bad registry file stops the process with one clear line."""
    try:
        return load_registry(path)
    except (RegistryError, OSError) as exc:
        raise SystemExit(f"configuration error: registry {path or '(built-in)'}: {exc}") from None

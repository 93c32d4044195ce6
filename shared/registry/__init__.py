"""The provider registry: models, prices, limits and lifecycle per provider (data: a file)."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, cast

from shared.registry.specs import (
    STATUSES,
    Generation,
    ModelSpec,
    ProviderSpec,
    Registry,
    RegistryError,
    Status,
)

__all__ = [
    "STATUSES",
    "Generation",
    "ModelSpec",
    "ProviderSpec",
    "Registry",
    "RegistryError",
    "Status",
    "load_provider_or_exit",
    "load_registry",
    "load_registry_or_exit",
    "parse_registry",
]

DATA_FILE = "providers.toml"

_PROVIDER_KEYS = frozenset(
    {
        "description",
        "default_rpm",
        "default_concurrency",
        "default_generation",
        "models",
        "models_from",
    }
)
_LIMIT_KEYS = frozenset({"rpm", "concurrency"})
_LIFECYCLE_KEYS = frozenset({"status", "shutdown", "replacement"})
# What a provider serving another's models (`models_from`) may still say about each of them.
_SERVING_KEYS = _LIMIT_KEYS | {"generation"} | _LIFECYCLE_KEYS
_MODEL_KEYS = frozenset({"aliases", "sizes", "seconds", "price_micros_per_second"}) | _SERVING_KEYS


def _positive_int(value: Any) -> bool:
    # bool is an int to Python; `true` is never a count, and a float price is never money.
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_keys(where: str, raw: dict[str, Any], allowed: frozenset[str], hint: str = "") -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise RegistryError(f"{where}: unknown key {unknown[0]!r}{hint} (allowed: {known})")


def _count(where: str, key: str, value: Any) -> int:
    if not _positive_int(value):
        raise RegistryError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return cast("int", value)


def _strings(where: str, key: str, value: Any, *, empty_ok: bool) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{where}: {key!r} must be a list of non-empty strings")
    if not value and not empty_ok:
        raise RegistryError(f"{where}: {key!r} must not be empty")
    if len(set(value)) != len(value):
        raise RegistryError(f"{where}: {key!r} lists a value twice")
    return value


def _prices(where: str, raw: Any, sizes: list[str]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: 'price_micros_per_second' must be a table of size = price")
    for size, price in raw.items():
        if size not in sizes:
            raise RegistryError(f"{where}: price for {size!r}, which is not one of its sizes")
        if not _positive_int(price):
            # Money is integer micro-dollars; a zero or float price is a data error, never "free".
            raise RegistryError(
                f"{where}: price for {size!r} must be a positive integer (micro-dollars per "
                f"second), got {price!r}"
            )
    return dict(raw)


def _generation(where: str, raw: Any, default: Generation) -> Generation:
    """`{ base_seconds = .., per_video_second = .. }`: either may be left to `default`."""
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise RegistryError(
            f"{where}: generation must be a table {{ base_seconds, per_video_second }}"
        )
    _check_keys(f"{where}: generation", raw, frozenset({"base_seconds", "per_video_second"}))
    values = {
        "base_seconds": raw.get("base_seconds", default.base_seconds),
        "per_video_second": raw.get("per_video_second", default.per_video_second),
    }
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
            raise RegistryError(f"{where}: generation {key} must be a number of seconds (0-86400)")
    return Generation(float(values["base_seconds"]), float(values["per_video_second"]))


def _lifecycle(where: str, raw: dict[str, Any]) -> tuple[Status, date | None, str | None]:
    status = raw.get("status", "live")
    shutdown = raw.get("shutdown")
    replacement = raw.get("replacement")
    if status not in STATUSES:
        raise RegistryError(f"{where}: status {status!r} is not one of {', '.join(STATUSES)}")
    # tomllib reads a bare TOML date as a date and a date-time as a datetime (a date subclass).
    if shutdown is not None and (not isinstance(shutdown, date) or isinstance(shutdown, datetime)):
        raise RegistryError(
            f"{where}: 'shutdown' must be a TOML date (2026-09-24), got {shutdown!r}"
        )
    if replacement is not None and (not isinstance(replacement, str) or not replacement):
        raise RegistryError(f"{where}: 'replacement' must be a model name")
    if status == "live" and (shutdown is not None or replacement is not None):
        raise RegistryError(
            f"{where}: a live model has no shutdown or replacement; make it 'deprecated'"
        )
    return status, shutdown, replacement


def _definition(where: str, name: str, raw: dict[str, Any], rpm: int, conc: int) -> ModelSpec:
    """What a model is: names, sizes, seconds, prices (limits: the provider's defaults)."""
    if "sizes" not in raw or "seconds" not in raw:
        raise RegistryError(f"{where}: 'sizes' and 'seconds' are required")
    sizes = _strings(where, "sizes", raw["sizes"], empty_ok=False)
    seconds = raw["seconds"]
    if not isinstance(seconds, list) or not seconds or not all(map(_positive_int, seconds)):
        raise RegistryError(f"{where}: 'seconds' must be a non-empty list of positive integers")
    return ModelSpec(
        name=name,
        sizes=frozenset(sizes),
        seconds=frozenset(seconds),
        price_micros_per_second=_prices(where, raw.get("price_micros_per_second", {}), sizes),
        aliases=frozenset(_strings(where, "aliases", raw.get("aliases", []), empty_ok=True)),
        rpm=rpm,
        concurrency=conc,
    )


def _parse_model(
    where: str,
    raw: dict[str, Any],
    rpm: int,
    conc: int,
    definition: ModelSpec,
    *,
    generation: Generation,
) -> ModelSpec:
    """`definition` as one provider serves it: with its limits, generation time and
    lifecycle there."""
    status, shutdown, replacement = _lifecycle(where, raw)
    return replace(
        definition,
        rpm=_count(where, "rpm", raw.get("rpm", rpm)),
        concurrency=_count(where, "concurrency", raw.get("concurrency", conc)),
        generation=_generation(where, raw.get("generation"), generation),
        status=status,
        shutdown=shutdown,
        replacement=replacement,
    )


def _tables(where: str, raw: Any, what: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise RegistryError(f"{where}: {what} must be tables")
    return cast("dict[str, dict[str, Any]]", raw)


def _models_of(
    name: str,
    raw: dict[str, Any],
    rpm: int,
    conc: int,
    sources: dict[str, ProviderSpec],
    *,
    generation: Generation,
) -> dict[str, ModelSpec]:
    where = f"provider {name!r}"
    tables = _tables(where, raw.get("models", {}), "its models")
    origin = raw.get("models_from")
    if origin is not None and not isinstance(origin, str):
        raise RegistryError(f"{where}: 'models_from' must be a provider name")
    if origin is None:
        if not tables:
            raise RegistryError(f"{where}: no models (a [..models.<name>] table or models_from)")
        models = {}
        for m, t in tables.items():
            at = f"{where}: model {m!r}"
            _check_keys(at, t, _MODEL_KEYS)
            definition = _definition(at, m, t, rpm, conc)
            models[m] = _parse_model(at, t, rpm, conc, definition, generation=generation)
        return models
    if origin not in sources:
        raise RegistryError(
            f"{where}: models_from {origin!r} is not a provider that defines its own models "
            f"(those are: {', '.join(sorted(sources))})"
        )
    source = sources[origin]
    for m, t in tables.items():
        if m not in source.models:
            raise RegistryError(
                f"{where}: model {m!r} is not a model of {origin!r} (models_from); "
                f"its models: {', '.join(sorted(source.models))}"
            )
        _check_keys(
            f"{where}: model {m!r}", t, _SERVING_KEYS, " (its definition is in models_from)"
        )
    return {
        m: _parse_model(
            f"{where}: model {m!r}", tables.get(m, {}), rpm, conc, spec, generation=generation
        )
        for m, spec in source.models.items()
    }


def _check_names(name: str, models: dict[str, ModelSpec]) -> None:
    """Every name and alias means one model; a replacement is another model of the provider."""
    seen: dict[str, str] = {}
    for spec in models.values():
        for label in (spec.name, *sorted(spec.aliases)):
            if label in seen:
                raise RegistryError(
                    f"provider {name!r}: {label!r} names both {seen[label]!r} and {spec.name!r}"
                )
            seen[label] = spec.name
    for spec in models.values():
        if spec.replacement is not None and (
            spec.replacement not in models or spec.replacement == spec.name
        ):
            others = ", ".join(sorted(set(models) - {spec.name})) or "none"
            raise RegistryError(
                f"provider {name!r}: model {spec.name!r}: replacement {spec.replacement!r} is "
                f"not another model of {name!r} (its other models: {others})"
            )


def _parse_provider(
    name: str, raw: dict[str, Any], sources: dict[str, ProviderSpec]
) -> ProviderSpec:
    where = f"provider {name!r}"
    _check_keys(where, raw, _PROVIDER_KEYS)
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise RegistryError(f"{where}: 'description' must be a non-empty string")
    for key in ("default_rpm", "default_concurrency"):
        if key not in raw:
            raise RegistryError(f"{where}: {key!r} is required")
    rpm = _count(where, "default_rpm", raw["default_rpm"])
    conc = _count(where, "default_concurrency", raw["default_concurrency"])
    generation = _generation(where, raw.get("default_generation"), Generation())
    models = _models_of(name, raw, rpm, conc, sources, generation=generation)
    _check_names(name, models)
    return ProviderSpec(name, description.strip(), rpm, conc, models, generation)


def parse_registry(text: str) -> Registry:
    """Parse registry TOML text; raises RegistryError naming the offending provider and model."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"registry is not valid TOML: {exc}") from exc
    _check_keys("registry", data, frozenset({"providers"}))
    if not data.get("providers"):
        raise RegistryError("registry has no [providers.<name>] table")
    providers = _tables("registry", data["providers"], "providers")
    # Providers that define their own models first: the others serve those (models_from).
    sources = {
        n: _parse_provider(n, raw, {}) for n, raw in providers.items() if "models_from" not in raw
    }
    return Registry(
        {n: sources.get(n) or _parse_provider(n, raw, sources) for n, raw in providers.items()}
    )


def load_registry(path: Path | None = None) -> Registry:
    """Load the registry from `path`, or the one shipped with clipline."""
    if path is not None:
        return parse_registry(path.read_text(encoding="utf-8"))
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse_registry(text)


def load_registry_or_exit(path: Path | None = None) -> Registry:
    """For process entry points: a bad registry file stops the process with one clear line."""
    try:
        return load_registry(path)
    except (RegistryError, OSError) as exc:
        raise SystemExit(f"configuration error: registry {path or '(built-in)'}: {exc}") from None


def load_provider_or_exit(path: Path | None, name: str) -> ProviderSpec:
    """For process entry points: the provider `name` (CLIPLINE_PROVIDER) of the registry at
    `path` (None: the built-in one); a bad file or an unknown name stops the process with one
    clear line."""
    registry = load_registry_or_exit(path)
    try:
        return registry.provider(name)
    except RegistryError as exc:
        raise SystemExit(
            f"configuration error: CLIPLINE_PROVIDER: {exc} (registry {path or '(built-in)'})"
        ) from None

"""The provider registry: models, prices, limits and lifecycle per provider (data: a file)."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from shared.registry.specs import (
    STATUSES,
    Generation,
    ModelSpec,
    ProviderSpec,
    Registry,
    RegistryError,
    Status,
)
from shared.registry.tables import (
    GenerationTable,
    ModelTable,
    ProviderTable,
    RegistryTable,
    ServingProviderTable,
    ServingTable,
    read,
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


def _generation(table: GenerationTable | None, default: Generation) -> Generation:
    """A generation table over `default`: either number may be left to it."""
    if table is None:
        return default
    base, per_second = table.base_seconds, table.per_video_second
    return Generation(
        default.base_seconds if base is None else base,
        default.per_video_second if per_second is None else per_second,
    )


def _served(
    definition: ModelSpec, table: ServingTable, provider: ProviderTable | ServingProviderTable
) -> ModelSpec:
    """`definition` as one provider serves it: with its limits, generation time and lifecycle."""
    default = _generation(provider.default_generation, Generation())
    return replace(
        definition,
        rpm=table.rpm or provider.default_rpm,
        concurrency=table.concurrency or provider.default_concurrency,
        generation=_generation(table.generation, default),
        status=table.status,
        shutdown=table.shutdown,
        replacement=table.replacement,
    )


def _defined(name: str, table: ModelTable) -> ModelSpec:
    """What a model is: names, sizes, seconds, prices (limits and lifecycle: see _served)."""
    return ModelSpec(
        name=name,
        sizes=frozenset(table.sizes),
        seconds=frozenset(table.seconds),
        price_micros_per_second=dict(table.price_micros_per_second),
        aliases=frozenset(table.aliases),
        rpm=1,
        concurrency=1,
    )


def _models_from(
    where: str, provider: ServingProviderTable, sources: dict[str, ProviderSpec]
) -> dict[str, ModelSpec]:
    origin = provider.models_from
    if origin not in sources:
        raise RegistryError(
            f"{where}: models_from {origin!r} is not a provider that defines its own models "
            f"(those are: {', '.join(sorted(sources))})"
        )
    source = sources[origin].models
    for m in provider.models:
        if m not in source:
            raise RegistryError(
                f"{where}: model {m!r} is not a model of {origin!r} (models_from); "
                f"its models: {', '.join(sorted(source))}"
            )
    return {
        m: _served(spec, provider.models.get(m, ServingTable()), provider)
        for m, spec in source.items()
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


def _provider(name: str, raw: dict[str, Any], sources: dict[str, ProviderSpec]) -> ProviderSpec:
    where = f"provider {name!r}"
    table: ProviderTable | ServingProviderTable
    if "models_from" in raw:
        table = read(ServingProviderTable, raw, where)
        models = _models_from(where, table, sources)
    else:
        table = read(ProviderTable, raw, where)
        models = {m: _served(_defined(m, t), t, table) for m, t in table.models.items()}
    _check_names(name, models)
    generation = _generation(table.default_generation, Generation())
    return ProviderSpec(
        name, table.description, table.default_rpm, table.default_concurrency, models, generation
    )


def parse_registry(text: str) -> Registry:
    """Parse registry TOML text; raises RegistryError naming the offending provider and model."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"registry is not valid TOML: {exc}") from exc
    providers = read(RegistryTable, data, "registry").providers
    # Providers that define their own models first: the others serve those (models_from).
    sources = {n: _provider(n, raw, {}) for n, raw in providers.items() if "models_from" not in raw}
    return Registry(
        {n: sources.get(n) or _provider(n, raw, sources) for n, raw in providers.items()}
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

"""The registry file's tables as pydantic models (`extra="forbid"`), and their errors in words."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from shared.registry.specs import STATUSES, RegistryError, Status

# Strict: `true` is never a count, a float is never money, a string is never a date.
Count = Annotated[int, Field(gt=0)]
Name = Annotated[str, Field(min_length=1)]
GenerationSeconds = Annotated[float, Field(ge=0, le=86400)]


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("lists a value twice")
    return values


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    unknown_hint: ClassVar[str] = ""
    known_elsewhere: ClassVar[frozenset[str]] = frozenset()
    """Keys that choose another table (models_from): named among the allowed ones."""

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """extra="forbid" refuses an unknown key; this says which keys are known."""
        unknown = sorted(set(data) - set(cls.model_fields)) if isinstance(data, dict) else []
        if unknown:
            known = ", ".join(sorted({*cls.model_fields, *cls.known_elsewhere}))
            raise ValueError(f"unknown key {unknown[0]!r}{cls.unknown_hint} (allowed: {known})")
        return data


T = TypeVar("T", bound=_Table)


class GenerationTable(_Table):
    """`{ base_seconds, per_video_second }`: either may be left to the default."""

    base_seconds: GenerationSeconds | None = None
    per_video_second: GenerationSeconds | None = None


class ServingTable(_Table):
    """What whoever serves a model says about it: limits, generation time, lifecycle."""

    unknown_hint: ClassVar[str] = " (its definition is in models_from)"

    rpm: Count | None = None
    concurrency: Count | None = None
    generation: GenerationTable | None = None
    status: Status = "live"
    shutdown: date | None = None  # tomllib: a bare TOML date is a date, a date-time is not
    replacement: Name | None = None

    @model_validator(mode="after")
    def _live_runs_on(self) -> ServingTable:
        if self.status == "live" and (self.shutdown is not None or self.replacement is not None):
            raise ValueError("a live model has no shutdown or replacement; make it 'deprecated'")
        return self


class ModelTable(ServingTable):
    """A model as its provider defines it: names, sizes, seconds, prices, and how it is served."""

    unknown_hint: ClassVar[str] = ""

    aliases: Annotated[list[Name], AfterValidator(_distinct)] = []
    sizes: Annotated[list[Name], Field(min_length=1), AfterValidator(_distinct)]
    seconds: Annotated[list[Count], Field(min_length=1)]
    # Money is integer micro-dollars; a zero or float price is a data error, never "free".
    price_micros_per_second: dict[str, Count] = {}

    @model_validator(mode="after")
    def _prices_for_its_sizes(self) -> ModelTable:
        for size in self.price_micros_per_second:
            if size not in self.sizes:
                raise ValueError(f"price for {size!r}, which is not one of its sizes")
        return self


class ProviderTable(_Table):
    """A provider that defines its own models."""

    known_elsewhere: ClassVar[frozenset[str]] = frozenset({"models_from"})

    description: Annotated[str, AfterValidator(_not_blank)]
    default_rpm: Count
    default_concurrency: Count
    default_generation: GenerationTable | None = None
    models: Annotated[dict[str, ModelTable], Field(min_length=1)]


class ServingProviderTable(_Table):
    """A provider serving another's models (`models_from`): it may set only how it serves them."""

    description: Annotated[str, AfterValidator(_not_blank)]
    default_rpm: Count
    default_concurrency: Count
    default_generation: GenerationTable | None = None
    models_from: Name
    models: dict[str, ServingTable] = {}


class RegistryTable(_Table):
    providers: Annotated[dict[str, dict[str, Any]], Field(min_length=1)]


_MUST_BE = {
    "description": "a non-empty string",
    "default_rpm": "a positive integer",
    "default_concurrency": "a positive integer",
    "rpm": "a positive integer",
    "concurrency": "a positive integer",
    "sizes": "a non-empty list of non-empty strings",
    "aliases": "a list of non-empty strings",
    "seconds": "a non-empty list of positive integers",
    "price_micros_per_second": "a table of size = price",
    "shutdown": "a TOML date (2026-09-24)",
    "replacement": "a model name",
    "models_from": "a provider name",
    "generation": "a table { base_seconds, per_video_second }",
    "default_generation": "a table { base_seconds, per_video_second }",
    "base_seconds": "a number of seconds (0-86400)",
    "per_video_second": "a number of seconds (0-86400)",
}
_NONE_OF = {
    "providers": "registry has no [providers.<name>] table",
    "models": "no models (a [..models.<name>] table or models_from)",
}
_TABLES = {"providers": "providers", "models": "its models"}


def _at(raw: Any, loc: tuple[int | str, ...]) -> Any:
    for step in loc:
        if isinstance(raw, dict):
            raw = raw.get(step)
        else:
            raw = raw[step] if isinstance(raw, list) and isinstance(step, int) else None
    return raw


def _words(where: str, raw: Any, error: ErrorDetails) -> str:
    """One pydantic error as one sentence naming the provider, the model and the key."""
    loc, kind = tuple(error["loc"]), error["type"]
    said = str(error.get("ctx", {}).get("error", error["msg"]))
    if len(loc) == 1 and loc[0] in _NONE_OF and kind in {"missing", "too_short"}:
        return f"{where}: {_NONE_OF[str(loc[0])]}".removeprefix("registry: ")
    if 1 <= len(loc) <= 2 and loc[0] in _TABLES and kind in {"dict_type", "model_type"}:
        return f"{where}: {_TABLES[str(loc[0])]} must be tables"
    if len(loc) >= 2 and loc[0] == "models":
        where, raw, loc = f"{where}: model {loc[1]!r}", _at(raw, loc[:2]), loc[2:]
    if not loc:  # the table as a whole: an unknown key, or a check across its keys
        return f"{where}: {said}"
    key, value = str(loc[0]), _at(raw, loc[:1])
    if key == "price_micros_per_second" and len(loc) == 2:
        return (
            f"{where}: price for {loc[1]!r} must be a positive integer (micro-dollars per "
            f"second), got {_at(raw, loc)!r}"
        )
    if key in {"generation", "default_generation"} and len(loc) == 2:
        return f"{where}: {key} {loc[1]} must be {_MUST_BE[str(loc[1])]}, got {_at(raw, loc)!r}"
    if kind == "value_error":  # a validator's words, or an unknown key in a nested table
        return f"{where}: {key}: {said}" if "generation" in key else f"{where}: {key!r} {said}"
    if kind == "missing":
        return f"{where}: {key!r} is required"
    if kind == "literal_error":
        return f"{where}: {key} {value!r} is not one of {', '.join(STATUSES)}"
    if kind == "too_short" and isinstance(value, list):
        return f"{where}: {key!r} must not be empty"
    return f"{where}: {key!r} must be {_MUST_BE.get(key, 'valid')}, got {value!r}"


def read(table: type[T], raw: Any, where: str) -> T:
    """`raw` as `table`; a RegistryError naming `where` and the first problem."""
    try:
        return table.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(_words(where, raw, exc.errors()[0])) from None

"""A process's environment derived from Settings instances: the names the Settings classes read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from functools import cache
from pathlib import PurePath
from typing import Any, TypeVar, cast

from pydantic import AliasChoices, BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """Values a Settings class refuses, said with the variables' names and without the values."""


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The variable `cls` reads `field` from: its alias if it has one, else env_prefix + name."""
    info = cls.model_fields[field]
    alias = info.validation_alias or info.alias
    if isinstance(alias, AliasChoices):
        alias = next((a for a in alias.choices if isinstance(a, str)), None)
    if isinstance(alias, str):
        return alias.upper()
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def _text(value: Any) -> str:
    """A value as pydantic-settings reads it back: secrets revealed, complex values as JSON."""
    if isinstance(value, SecretStr | SecretBytes):
        value = value.get_secret_value()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str | int | float | PurePath):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def settings_env(*settings: BaseSettings) -> dict[str, str]:
    """The variables that make each Settings class read back the fields set on its instance
    (`model_fields_set`; build instances with `settings_from` so that is what you gave): name ->
    value as text. Secrets are revealed, into this dict only; a None is left out (the class's
    default, which must then be None). Two instances naming one variable must agree."""
    env: dict[str, str] = {}
    for instance in settings:
        cls = type(instance)
        for field in sorted(instance.model_fields_set):
            value = getattr(instance, field)
            if value is None:
                continue
            name, text = env_name(cls, field), _text(value)
            if env.get(name, text) != text:
                raise ValueError(f"{name} is set twice, to different values")
            env[name] = text
    return env


@cache
def _given_only(cls: type[S]) -> type[S]:
    """`cls` reading its init arguments alone: no environment, .env file or secrets dir."""

    class Given(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    Given.__name__ = Given.__qualname__ = cls.__name__
    return Given


def settings_from(cls: type[S], values: Mapping[str, Any]) -> S:
    """An instance of `cls` holding exactly `values` (by field name), validated as `cls`
    validates its environment (a bad value raises SettingsError), with nothing read
    from the process's own environment: what `settings_env` then hands to another process."""
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:  # the class ignores extra variables; a misspelt field must not vanish here
        raise SettingsError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    try:
        given = _given_only(cls)(**values)
    except ValidationError as exc:  # in the variables' names, never echoing a value (a secret)
        raise SettingsError(
            "; ".join(
                f"{env_name(cls, str(e['loc'][0]))}: {e['msg']}" if e["loc"] else e["msg"]
                for e in exc.errors()
            )
        ) from None
    fields = {name: getattr(given, name) for name in cls.model_fields}
    made = cls.model_construct(_fields_set=set(values), **fields)
    return cast("S", made)  # mypy reads model_construct on type[S] as the bound's

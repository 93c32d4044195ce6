"""The provider registry: the shipped data, aliases, lifecycle, and every malformed-data error."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.simulator.limits import TIER_RPM
from services.simulator.settings import SimulatorSettings
from shared.registry import (
    ModelSpec,
    RegistryError,
    load_provider_or_exit,
    load_registry,
    load_registry_or_exit,
    parse_registry,
)
from shared.registry import tables as tables_module

SHUTDOWN = date(2026, 9, 24)
REGISTRY = load_registry()
LIVE = ["simulator", "litellm"]


def test_the_three_providers_are_shipped() -> None:
    assert set(REGISTRY.providers) == {"simulator", "openai", "litellm"}
    for provider in REGISTRY.providers.values():
        assert provider.description
        assert set(provider.models) == {"sora-2", "sora-2-pro"}


@pytest.mark.parametrize("name", ["simulator", "openai", "litellm"])
def test_published_prices_in_micro_dollars(name: str) -> None:
    p = REGISTRY.provider(name)
    assert p.price_micros_per_second("sora-2", "720x1280") == 100_000
    assert p.price_micros_per_second("sora-2", "1280x720") == 100_000
    assert p.price_micros_per_second("sora-2-pro", "1280x720") == 300_000
    assert p.price_micros_per_second("sora-2-pro", "720x1280") == 300_000
    assert p.price_micros_per_second("sora-2-pro", "1024x1792") == 500_000
    assert p.price_micros_per_second("sora-2-pro", "1792x1024") == 500_000


@pytest.mark.parametrize("name", ["simulator", "openai", "litellm"])
def test_1080p_is_accepted_but_unpriced(name: str) -> None:
    p = REGISTRY.provider(name)
    assert {"1080x1920", "1920x1080"} <= p.models["sora-2-pro"].sizes
    assert p.price_micros_per_second("sora-2-pro", "1920x1080") is None
    assert p.price_micros_per_second("sora-2-pro", "1080x1920") is None
    assert p.price_micros_per_second("sora-2", "1792x1024") is None  # not a sora-2 size
    assert p.price_micros_per_second("sora-3", "1280x720") is None


@pytest.mark.parametrize("name", ["simulator", "openai", "litellm"])
def test_dated_slugs_resolve_to_their_model(name: str) -> None:
    p = REGISTRY.provider(name)
    for alias, model in [
        ("sora-2-2025-10-06", "sora-2"),
        ("sora-2-2025-12-08", "sora-2"),
        ("sora-2-pro-2025-10-06", "sora-2-pro"),
    ]:
        spec = p.model(alias)
        assert spec is not None
        assert spec.name == model
    assert p.price_micros_per_second("sora-2-2025-12-08", "1280x720") == 100_000
    assert p.model("sora-2-2099-01-01") is None


def test_openai_retired_every_model_on_2026_09_24_with_no_replacement() -> None:
    for spec in REGISTRY.provider("openai").models.values():
        assert (spec.status, spec.shutdown, spec.replacement) == ("retired", SHUTDOWN, None)


@pytest.mark.parametrize("name", LIVE)
def test_simulator_and_gateway_models_are_live(name: str) -> None:
    for spec in REGISTRY.provider(name).models.values():
        assert (spec.status, spec.shutdown, spec.replacement) == ("live", None, None)
        assert not spec.retired_on(date(9999, 12, 31))


def test_simulator_limits_are_what_the_simulator_enforces_by_default() -> None:
    tier = SimulatorSettings.model_fields["rate_limit_tier"].default
    simulator = REGISTRY.provider("simulator")
    for name, rpm in TIER_RPM[tier].items():
        spec = simulator.models[name]
        assert spec.rpm == rpm
        # It enforces no concurrency limit; a full bucket lets `rpm` creates through at once.
        assert spec.concurrency == rpm
    assert simulator.rpm == TIER_RPM[tier]["sora-2"]


def test_openai_limits_are_tier_1_and_a_model_override_wins() -> None:
    openai = REGISTRY.provider("openai")
    assert (openai.rpm, openai.concurrency) == (25, 25)
    assert (openai.models["sora-2"].rpm, openai.models["sora-2"].concurrency) == (25, 25)
    assert (openai.models["sora-2-pro"].rpm, openai.models["sora-2-pro"].concurrency) == (10, 10)


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(RegistryError, match="unknown provider 'nope'; known providers: litellm, "):
        REGISTRY.provider("nope")


# --- lifecycle ---------------------------------------------------------------------------------


def spec(**lifecycle: object) -> ModelSpec:
    return ModelSpec(
        name="m", sizes=frozenset({"1x1"}), seconds=frozenset({4}), price_micros_per_second={},
        rpm=1, concurrency=1, **lifecycle,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("status", ["retired", "deprecated"])
def test_a_shutdown_date_retires_from_that_day_on(status: str) -> None:
    model = spec(status=status, shutdown=SHUTDOWN)
    assert not model.retired_on(date.min)
    assert not model.retired_on(SHUTDOWN - timedelta(days=1))
    assert model.retired_on(SHUTDOWN)
    assert model.retired_on(SHUTDOWN + timedelta(days=1))
    assert model.retired_on(date.max)


def test_retired_without_a_date_is_retired_on_any_day() -> None:
    model = spec(status="retired")
    assert model.retired_on(date.min)
    assert model.retired_on(date.max)


@pytest.mark.parametrize("status", ["live", "deprecated"])
def test_without_a_date_only_retired_stops(status: str) -> None:
    model = spec(status=status)
    assert not model.retired_on(date.min)
    assert not model.retired_on(date.max)


# --- models_from -------------------------------------------------------------------------------

SERVED = """
[providers.origin]
description = "defines the models"
default_rpm = 5
default_concurrency = 2
[providers.origin.models.m]
aliases = ["m-2025"]
sizes = ["1x1", "2x2"]
seconds = [4, 8]
rpm = 3
status = "deprecated"
shutdown = 2026-01-01
replacement = "n"
[providers.origin.models.m.price_micros_per_second]
"1x1" = 10
[providers.origin.models.n]
sizes = ["1x1"]
seconds = [4]

[providers.mirror]
description = "serves them"
models_from = "origin"
default_rpm = 50
default_concurrency = 20
[providers.mirror.models.n]
concurrency = 7
status = "retired"
"""


def test_models_from_takes_the_definition_but_not_limits_or_lifecycle() -> None:
    registry = parse_registry(SERVED)
    origin, mirror = registry.provider("origin"), registry.provider("mirror")
    m = mirror.models["m"]
    assert (m.sizes, m.seconds, m.aliases) == (
        origin.models["m"].sizes,
        origin.models["m"].seconds,
        frozenset({"m-2025"}),
    )
    assert m.price_micros_per_second == {"1x1": 10}
    assert mirror.model("m-2025") is m
    assert (m.rpm, m.concurrency) == (50, 20)  # mirror's defaults, not origin's override
    assert (m.status, m.shutdown, m.replacement) == ("live", None, None)
    n = mirror.models["n"]
    assert (n.rpm, n.concurrency, n.status) == (50, 7, "retired")
    assert origin.models["m"].rpm == 3
    assert origin.models["m"].concurrency == 2
    assert origin.models["n"].status == "live"


def test_load_registry_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "providers.toml"
    path.write_text(SERVED, encoding="utf-8")
    assert set(load_registry(path).providers) == {"origin", "mirror"}
    assert load_provider_or_exit(path, "mirror").name == "mirror"


def test_entry_points_exit_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^configuration error: registry .*nope\.toml"):
        load_registry_or_exit(tmp_path / "nope.toml")
    with pytest.raises(SystemExit, match=r"^configuration error: registry .*nope\.toml"):
        load_provider_or_exit(tmp_path / "nope.toml", "simulator")
    unknown = "^configuration error: CLIPLINE_PROVIDER: unknown provider 'sora'; known providers: "
    with pytest.raises(SystemExit, match=unknown + "litellm, openai, simulator"):
        load_provider_or_exit(None, "sora")
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.p]\ndescription = "d"\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"configuration error: registry .*: provider 'p'"):
        load_provider_or_exit(bad, "p")


# --- malformed data ----------------------------------------------------------------------------


def one(provider: str = "", model: str = "", prices: str = '"1x1" = 10', more: str = "") -> str:
    """A registry of provider `p` with model `m`, plus the given lines in each table."""
    return (
        '[providers.p]\ndescription = "d"\ndefault_rpm = 5\ndefault_concurrency = 2\n'
        f"{provider}\n"
        f'[providers.p.models.m]\nsizes = ["1x1", "2x2"]\nseconds = [4]\n{model}\n'
        f"[providers.p.models.m.price_micros_per_second]\n{prices}\n{more}"
    )


MIRROR = '[providers.q]\ndescription = "d"\ndefault_rpm = 1\ndefault_concurrency = 1\n'
OTHER_MODEL = '[providers.p.models.n]\nsizes = ["1x1"]\nseconds = [4]\n'

MALFORMED = {
    "not toml": ("not toml [", "registry is not valid TOML"),
    "empty": ("", r"registry has no \[providers.<name>\] table"),
    "flat models": ('[models.m]\nsizes = ["1x1"]', "registry: unknown key 'models'"),
    "provider not a table": ("providers.p = 1", "registry: providers must be tables"),
    "provider unknown key": (one('colour = "red"'), "provider 'p': unknown key 'colour'"),
    "no description": (
        one().replace('description = "d"', ""),
        "provider 'p': 'description' is required",
    ),
    "no default_rpm": (
        one().replace("default_rpm = 5", ""),
        "provider 'p': 'default_rpm' is required",
    ),
    "zero default_rpm": (
        one().replace("default_rpm = 5", "default_rpm = 0"),
        "provider 'p': 'default_rpm' must be a positive integer, got 0",
    ),
    "float concurrency": (
        one().replace("default_concurrency = 2", "default_concurrency = 2.5"),
        "provider 'p': 'default_concurrency' must be a positive integer, got 2.5",
    ),
    "bool concurrency": (
        one().replace("default_concurrency = 2", "default_concurrency = true"),
        "provider 'p': 'default_concurrency' must be a positive integer, got True",
    ),
    "no models": (
        '[providers.p]\ndescription = "d"\ndefault_rpm = 5\ndefault_concurrency = 2\n',
        "provider 'p': no models",
    ),
    "model not a table": (
        '[providers.p]\ndescription = "d"\ndefault_rpm = 5\ndefault_concurrency = 2\n'
        "models = { m = 1 }",
        "provider 'p': its models must be tables",
    ),
    "model unknown key": (one(model="price = 3"), "provider 'p': model 'm': unknown key 'price'"),
    "no sizes": (
        one().replace('sizes = ["1x1", "2x2"]', ""),
        "provider 'p': model 'm': 'sizes' is required",
    ),
    "empty sizes": (
        one(prices="").replace('sizes = ["1x1", "2x2"]', "sizes = []"),
        "provider 'p': model 'm': 'sizes' must not be empty",
    ),
    "size twice": (
        one().replace('sizes = ["1x1", "2x2"]', 'sizes = ["1x1", "1x1"]'),
        "provider 'p': model 'm': 'sizes' lists a value twice",
    ),
    "zero seconds": (
        one().replace("seconds = [4]", "seconds = [0]"),
        "provider 'p': model 'm': 'seconds' must be a non-empty list of positive integers",
    ),
    "float seconds": (one().replace("seconds = [4]", "seconds = [4.0]"), "'seconds' must be"),
    "bool seconds": (one().replace("seconds = [4]", "seconds = [true]"), "'seconds' must be"),
    "aliases not strings": (
        one(model="aliases = [1]"),
        "provider 'p': model 'm': 'aliases' must be a list of non-empty strings",
    ),
    "prices not a table": (
        one(prices="").replace(
            "[providers.p.models.m.price_micros_per_second]", "price_micros_per_second = 5"
        ),
        "provider 'p': model 'm': 'price_micros_per_second' must be a table",
    ),
    "zero price": (
        one(prices='"1x1" = 0'),
        r"provider 'p': model 'm': price for '1x1' must be a positive integer \(micro-dollars",
    ),
    "float price": (one(prices='"1x1" = 0.1'), "price for '1x1' must be a positive integer"),
    "bool price": (one(prices='"1x1" = true'), "price for '1x1' must be a positive integer"),
    "negative price": (one(prices='"1x1" = -5'), "price for '1x1' must be a positive integer"),
    "price for an unlisted size": (
        one(prices='"3x3" = 5'),
        "provider 'p': model 'm': price for '3x3', which is not one of its sizes",
    ),
    "zero model rpm": (
        one(model="rpm = 0"),
        "provider 'p': model 'm': 'rpm' must be a positive integer, got 0",
    ),
    "float model concurrency": (
        one(model="concurrency = 1.5"),
        "provider 'p': model 'm': 'concurrency' must be a positive integer",
    ),
    "bad status": (
        one(model='status = "gone"'),
        "provider 'p': model 'm': status 'gone' is not one of live, deprecated, retired",
    ),
    "shutdown as a string": (
        one(model='status = "retired"\nshutdown = "2026-09-24"'),
        r"provider 'p': model 'm': 'shutdown' must be a TOML date \(2026-09-24\)",
    ),
    "shutdown as a date-time": (
        one(model='status = "retired"\nshutdown = 2026-09-24T00:00:00Z'),
        "'shutdown' must be a TOML date",
    ),
    "live with a shutdown": (
        one(model="shutdown = 2026-09-24"),
        "provider 'p': model 'm': a live model has no shutdown or replacement",
    ),
    "live with a replacement": (
        one(model='replacement = "n"', more=OTHER_MODEL),
        "a live model has no shutdown or replacement",
    ),
    "replacement not a name": (
        one(model='status = "deprecated"\nreplacement = 3'),
        "provider 'p': model 'm': 'replacement' must be a model name",
    ),
    "replacement unknown": (
        one(model='status = "retired"\nreplacement = "sora-9"', more=OTHER_MODEL),
        "provider 'p': model 'm': replacement 'sora-9' is not another model of 'p' "
        r"\(its other models: n\)",
    ),
    "replacement itself": (
        one(model='status = "retired"\nreplacement = "m"'),
        r"replacement 'm' is not another model of 'p' \(its other models: none\)",
    ),
    "replacement of another provider": (
        one(model='status = "retired"\nreplacement = "x"')
        + MIRROR
        + '[providers.q.models.x]\nsizes = ["1x1"]\nseconds = [4]\n',
        "provider 'p': model 'm': replacement 'x' is not another model of 'p'",
    ),
    "alias is another model's name": (
        one(model='aliases = ["n"]', more=OTHER_MODEL),
        "provider 'p': 'n' names both 'm' and 'n'",
    ),
    "models_from not a name": (
        one() + MIRROR + "models_from = 1\n",
        "provider 'q': 'models_from' must be a provider name",
    ),
    "models_from unknown": (
        one() + MIRROR + 'models_from = "nope"\n',
        r"provider 'q': models_from 'nope' is not a provider that defines its own models "
        r"\(those are: p\)",
    ),
    "models_from itself": (
        one() + MIRROR + 'models_from = "q"\n',
        "provider 'q': models_from 'q' is not a provider that defines its own models",
    ),
    "models_from a chain": (
        one()
        + MIRROR
        + 'models_from = "p"\n'
        + '[providers.r]\ndescription = "d"\ndefault_rpm = 1\ndefault_concurrency = 1\n'
        + 'models_from = "q"\n',
        "provider 'r': models_from 'q' is not a provider that defines its own models",
    ),
    "models_from a model it lacks": (
        one() + MIRROR + 'models_from = "p"\n[providers.q.models.z]\nrpm = 3\n',
        r"provider 'q': model 'z' is not a model of 'p' \(models_from\); its models: m",
    ),
    "models_from redefines a model": (
        one() + MIRROR + 'models_from = "p"\n[providers.q.models.m]\nsizes = ["1x1"]\n',
        r"provider 'q': model 'm': unknown key 'sizes' \(its definition is in models_from\)",
    ),
    "models_from with a bad lifecycle": (
        one() + MIRROR + 'models_from = "p"\n[providers.q.models.m]\nstatus = "dead"\n',
        "provider 'q': model 'm': status 'dead' is not one of",
    ),
    "models_from with a bad replacement": (
        one()
        + MIRROR
        + 'models_from = "p"\n[providers.q.models.m]\nstatus = "retired"\nreplacement = "p"\n',
        "provider 'q': model 'm': replacement 'p' is not another model of 'q'",
    ),
    # read by the pydantic tables (shared/registry/tables.py), still in one sentence each
    "providers not tables": ("providers = 5", "^registry: providers must be tables$"),
    "no providers": ("[providers]", r"^registry has no \[providers.<name>\] table$"),
    "models not tables": (
        '[providers.p]\ndescription = "d"\ndefault_rpm = 5\ndefault_concurrency = 2\nmodels = 5',
        "^provider 'p': its models must be tables$",
    ),
    "models empty": (
        '[providers.p]\ndescription = "d"\ndefault_rpm = 5\ndefault_concurrency = 2\nmodels = {}',
        r"^provider 'p': no models \(a \[..models.<name>\] table or models_from\)$",
    ),
    "blank description": (
        one().replace('description = "d"', 'description = "  "'),
        "^provider 'p': 'description' must be a non-empty string$",
    ),
    "no seconds": (
        one().replace("seconds = [4]", ""),
        "^provider 'p': model 'm': 'seconds' is required$",
    ),
    "sizes not a list": (
        one(prices="").replace('sizes = ["1x1", "2x2"]', 'sizes = "1x1"'),
        "^provider 'p': model 'm': 'sizes' must be a non-empty list of non-empty strings, "
        "got '1x1'$",
    ),
    "alias twice": (
        one(model='aliases = ["a", "a"]'),
        "^provider 'p': model 'm': 'aliases' lists a value twice$",
    ),
    "status not a string": (
        one(model="status = 5"),
        "^provider 'p': model 'm': status 5 is not one of live, deprecated, retired$",
    ),
    "unknown key in a generation": (
        one("default_generation = { speed = 1 }"),
        r"^provider 'p': default_generation: unknown key 'speed' \(allowed: base_seconds, "
        r"per_video_second\)$",
    ),
    "generation out of range": (
        one(model="generation = { per_video_second = 1e9 }"),
        r"^provider 'p': model 'm': generation per_video_second must be a number of seconds "
        r"\(0-86400\), got 1000000000.0$",
    ),
    "models_from with an unknown key": (
        one() + MIRROR + 'models_from = "p"\ncolour = 1\n',
        r"^provider 'q': unknown key 'colour' \(allowed: default_concurrency, "
        r"default_generation, default_rpm, description, models, models_from\)$",
    ),
    "models_from model not a table": (
        one() + MIRROR + 'models_from = "p"\nmodels = { m = 1 }\n',
        "^provider 'q': its models must be tables$",
    ),
}


@pytest.mark.parametrize(("text", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_registry_is_a_typed_error_naming_provider_and_model(
    text: str, message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(text)


def test_the_well_formed_base_of_those_cases_parses() -> None:
    """Each case above breaks one thing: without it, the base is valid."""
    p = parse_registry(one(more=OTHER_MODEL) + MIRROR + 'models_from = "p"\n').provider("q")
    assert set(p.models) == {"m", "n"}


def test_every_table_of_the_file_forbids_unknown_keys() -> None:
    tables: list[type[BaseModel]] = [
        tables_module.RegistryTable, tables_module.ProviderTable, tables_module.ModelTable,
        tables_module.ServingProviderTable, tables_module.ServingTable,
        tables_module.GenerationTable,
    ]  # fmt: skip
    for table in tables:
        assert table.model_config.get("extra") == "forbid", table
        assert table.model_config.get("strict") is True, table

"""Properties of pricing_guard's `price` over every provider, model, size and duration shipped."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.pricing_guard.domain import Admitted, Refused, price
from shared.registry import ModelSpec, ProviderSpec, load_registry, parse_registry

REGISTRY = load_registry()
SHUTDOWN = date(2026, 9, 24)
LIVE = [
    p for p in REGISTRY.providers.values() if all(m.status == "live" for m in p.models.values())
]
OPENAI = REGISTRY.provider("openai")


def test_the_properties_cover_the_shipped_providers() -> None:
    """Guard against a vacuous property: the live providers are the simulator and the gateway."""
    assert {p.name for p in LIVE} == {"simulator", "litellm"}


def names(spec: ModelSpec) -> list[str]:
    """A model as a job may name it: by its name or any alias."""
    return [spec.name, *sorted(spec.aliases)]


def running_on(spec: ModelSpec) -> st.SearchStrategy[date]:
    """Days on which `spec` still runs (any day for a model without a shutdown date)."""
    last = date.max if spec.shutdown is None else spec.shutdown - timedelta(days=1)
    return st.dates(max_value=last)


PRICED = [
    (p, m, size, per_second)
    for p in REGISTRY.providers.values()
    for m in p.models.values()
    for size, per_second in m.price_micros_per_second.items()
]
UNPRICED = [
    (p, m, size)
    for p in REGISTRY.providers.values()
    for m in p.models.values()
    for size in sorted(m.sizes - set(m.price_micros_per_second))
]


@given(
    case=st.sampled_from([c for c in PRICED if c[0] in LIVE]),
    today=st.dates(),
    data=st.data(),
)
def test_a_live_provider_prices_per_second_times_seconds_exactly(
    case: tuple[ProviderSpec, ModelSpec, str, int], today: date, data: st.DataObject
) -> None:
    provider, spec, size, per_second = case
    name = data.draw(st.sampled_from(names(spec)))
    seconds = data.draw(st.sampled_from(sorted(spec.seconds)))
    decided = price(provider, name, size, seconds, today)
    assert decided == Admitted(per_second * seconds)
    assert isinstance(decided, Admitted)
    assert type(decided.cost_micros) is int
    assert decided.cost_micros > 0


@given(case=st.sampled_from(UNPRICED), seconds=st.integers(min_value=1), data=st.data())
def test_an_unpriced_size_is_refused_unpriced_never_free(
    case: tuple[ProviderSpec, ModelSpec, str], seconds: int, data: st.DataObject
) -> None:
    provider, spec, size = case
    name = data.draw(st.sampled_from(names(spec)))
    today = data.draw(running_on(spec))
    decided = price(provider, name, size, seconds, today)
    assert isinstance(decided, Refused)
    assert decided.reason == "unpriced"


@given(
    spec=st.sampled_from(list(OPENAI.models.values())),
    today=st.dates(min_value=SHUTDOWN),
    seconds=st.integers(min_value=-5, max_value=60),
    data=st.data(),
)
def test_every_openai_model_is_refused_retired_from_the_shutdown_on(
    spec: ModelSpec, today: date, seconds: int, data: st.DataObject
) -> None:
    """Before any price is looked at: unpriced sizes and odd durations are refused the same."""
    name = data.draw(st.sampled_from(names(spec)))
    size = data.draw(st.sampled_from(sorted(spec.sizes)))
    assert price(OPENAI, name, size, seconds, today) == Refused(
        "model_retired", f"{name} was retired by openai on 2026-09-24; no replacement was named"
    )


@given(
    case=st.sampled_from([c for c in PRICED if c[0] is OPENAI]),
    today=st.dates(max_value=SHUTDOWN - timedelta(days=1)),
    data=st.data(),
)
def test_every_openai_model_was_priced_before_the_shutdown(
    case: tuple[ProviderSpec, ModelSpec, str, int], today: date, data: st.DataObject
) -> None:
    _, spec, size, per_second = case
    name = data.draw(st.sampled_from(names(spec)))
    seconds = data.draw(st.sampled_from(sorted(spec.seconds)))
    assert price(OPENAI, name, size, seconds, today) == Admitted(per_second * seconds)


DEPRECATED = parse_registry("""
[providers.p]
description = "a provider that moved on"
default_rpm = 1
default_concurrency = 1
[providers.p.models.old]
sizes = ["1x1"]
seconds = [4]
status = "deprecated"
shutdown = 2030-01-01
replacement = "new"
price_micros_per_second = { "1x1" = 7 }
[providers.p.models.new]
sizes = ["1x1"]
seconds = [4]
price_micros_per_second = { "1x1" = 9 }
[providers.p.models.gone]
sizes = ["1x1"]
seconds = [4]
status = "retired"
""").provider("p")


@pytest.mark.parametrize(
    ("model", "today", "decided"),
    [
        ("old", date(2029, 12, 31), Admitted(28)),
        (
            "old",
            date(2030, 1, 1),
            Refused("model_retired", "old was retired by p on 2030-01-01; use new"),
        ),
        ("new", date(2030, 1, 1), Admitted(36)),
        (
            "gone",
            date(2000, 1, 1),
            Refused("model_retired", "gone was retired by p; no replacement was named"),
        ),
    ],
)
def test_the_retirement_detail_names_the_date_and_the_replacement(
    model: str, today: date, decided: Admitted | Refused
) -> None:
    assert price(DEPRECATED, model, "1x1", 4, today) == decided


def test_an_unknown_model_is_unpriced() -> None:
    decided = price(REGISTRY.provider("simulator"), "sora-3", "1280x720", 4, date(2026, 12, 2))
    assert isinstance(decided, Refused)
    assert decided.reason == "unpriced"

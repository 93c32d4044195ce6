"""Which limit a create counts against: the registry's per model (an alias shares its model's),
unless CLIPLINE_RATE_* override it."""

from __future__ import annotations

import pytest

from services.submitter.app import model_limits
from services.submitter.rates import Limits
from services.submitter.settings import SubmitterSettings
from shared.config import ConfigError, load_settings
from shared.registry import load_registry

SIMULATOR = load_registry().provider("simulator")


def test_the_registry_sets_each_models_limit_and_an_alias_shares_it() -> None:
    of = model_limits(SIMULATOR, SubmitterSettings())
    assert of("sora-2") == ("sora-2", Limits(rpm=25, concurrency=25, burst_seconds=60.0))
    assert of("sora-2-2025-10-06") == of("sora-2")
    assert of("sora-2-pro") == ("sora-2-pro", Limits(rpm=10, concurrency=10, burst_seconds=60.0))


def test_settings_override_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_RATE_RPM", "600")
    monkeypatch.setenv("CLIPLINE_RATE_CONCURRENCY", "50")
    monkeypatch.setenv("CLIPLINE_RATE_BURST_SECONDS", "5")
    of = model_limits(SIMULATOR, SubmitterSettings())
    assert of("sora-2-pro") == ("sora-2-pro", Limits(rpm=600, concurrency=50, burst_seconds=5.0))


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_bad_override_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CLIPLINE_RATE_RPM", value)
    with pytest.raises(ConfigError, match="CLIPLINE_RATE_RPM"):
        load_settings(SubmitterSettings)

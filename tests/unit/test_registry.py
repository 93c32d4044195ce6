"""The model registry: published prices, unpriced sizes, and malformed data."""

import pytest

from shared.registry import RegistryError, load_registry, parse_registry


def test_published_prices_in_micro_dollars() -> None:
    r = load_registry()
    assert r.price_micros_per_second("sora-2", "720x1280") == 100_000
    assert r.price_micros_per_second("sora-2", "1280x720") == 100_000
    assert r.price_micros_per_second("sora-2-pro", "1280x720") == 300_000
    assert r.price_micros_per_second("sora-2-pro", "720x1280") == 300_000
    assert r.price_micros_per_second("sora-2-pro", "1024x1792") == 500_000
    assert r.price_micros_per_second("sora-2-pro", "1792x1024") == 500_000


def test_accepted_but_unpriced_and_unknown_are_none() -> None:
    r = load_registry()
    assert "1920x1080" in r.models["sora-2-pro"].sizes
    assert r.price_micros_per_second("sora-2-pro", "1920x1080") is None
    assert r.price_micros_per_second("sora-2", "1792x1024") is None
    assert r.price_micros_per_second("sora-3", "1280x720") is None


def test_dated_slugs_resolve_to_their_model() -> None:
    r = load_registry()
    spec = r.model("sora-2-pro-2025-10-06")
    assert spec is not None
    assert spec.name == "sora-2-pro"
    assert r.price_micros_per_second("sora-2-2025-12-08", "1280x720") == 100_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\nx = 1", r"no \[models\]"),
        ("[models.m]\nsizes = []\nseconds = [4]", "'sizes'"),
        ('[models.m]\nsizes = ["1x1"]\nseconds = [0]', "positive integers"),
        (
            '[models.m]\nsizes = ["1x1"]\nseconds = [4]\n[models.m.price_micros_per_second]\n'
            '"1x1" = 0.1',
            "positive integer",
        ),
        (
            '[models.m]\nsizes = ["1x1"]\nseconds = [4]\n[models.m.price_micros_per_second]\n'
            '"2x2" = 5',
            "unknown size",
        ),
    ],
)
def test_malformed_registry_is_a_typed_error(text: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(text)

"""Intake validation and idempotency decisions."""

from typing import Any

import pytest

from services.intake.domain import Conflict, Invalid, New, Repeat, Valid, decode, dedupe, validate
from shared.registry import load_registry

REG = load_registry()


def ok(**over: Any) -> dict[str, Any]:
    return {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a cat", **over}


def test_valid_request_is_normalised() -> None:
    d = validate(ok(seconds="8"), "acme", REG)
    assert isinstance(d, Valid)
    assert d.spec.seconds == 8
    assert d.tenant == "acme"
    assert d.idempotency_key is None


def test_defaults_follow_the_api() -> None:
    d = validate({"prompt": "x"}, "acme", REG)
    assert isinstance(d, Valid)
    assert (d.spec.model, d.spec.size, d.spec.seconds) == ("sora-2", "720x1280", 4)


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (ok(prompt=""), "invalid_request", "prompt"),
        (ok(prompt="x" * 32_001), "invalid_request", "prompt"),
        ({"model": "sora-2"}, "invalid_request", "prompt"),
        (ok(model="sora-3"), "unknown_model", "model"),
        (ok(size="1792x1024"), "invalid_size", "size"),
        (ok(seconds=5), "invalid_seconds", "seconds"),
        (ok(seconds=True), "invalid_seconds", "seconds"),
        (ok(seconds="4.5"), "invalid_seconds", "seconds"),
        (ok(width=100), "invalid_request", "width"),
        (ok(idempotency_key=""), "invalid_request", "idempotency_key"),
        (ok(schema_version=2), "unsupported_version", None),
        (ok(tenant="other"), "invalid_tenant", None),
    ],
)
def test_invalid_requests_get_a_reason(
    body: dict[str, Any], reason: str, field: str | None
) -> None:
    d = validate(body, "acme", REG)
    assert isinstance(d, Invalid), d
    assert d.reason == reason
    assert d.field == field


def test_non_objects_and_bad_tenants_are_rejected() -> None:
    assert isinstance(validate(decode(b"not json"), "acme", REG), Invalid)
    assert isinstance(validate([1, 2], "acme", REG), Invalid)
    bad = validate(ok(), "Acme!", REG)
    assert isinstance(bad, Invalid)
    assert bad.reason == "invalid_tenant"


def test_fingerprint_separates_retries_from_reuse() -> None:
    a = validate(ok(), "acme", REG)
    b = validate(ok(seconds="4"), "acme", REG)
    c = validate(ok(prompt="a dog"), "acme", REG)
    assert isinstance(a, Valid)
    assert isinstance(b, Valid)
    assert isinstance(c, Valid)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_dedupe() -> None:
    assert dedupe(None, "h") == New()
    assert dedupe("h", "h") == Repeat()
    assert isinstance(dedupe("h", "other"), Conflict)

"""Intake validation and idempotency decisions."""

from typing import Any

import pytest

from services.intake.adapters import probe_image
from services.intake.domain import (
    Conflict,
    Image,
    Invalid,
    New,
    Repeat,
    RequestSubject,
    Valid,
    check_image,
    decode,
    dedupe,
    parse_request_subject,
    validate,
)
from shared.contracts.requests import JobRequestV1
from shared.registry import load_registry
from tests.images import data_url, image_bytes

REG = load_registry().provider("simulator")


def ok(**over: Any) -> dict[str, Any]:
    return {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a cat", **over}


def test_unknown_model_lists_the_providers_models() -> None:
    d = validate(ok(model="sora-3"), "acme", REG)
    assert isinstance(d, Invalid)
    assert d.detail == "model 'sora-3' is not one of simulator's: sora-2, sora-2-pro"


def test_a_retired_model_is_still_a_valid_request_pricing_refuses_it() -> None:
    """intake checks what a model accepts; whether it still runs is pricing_guard's call."""
    d = validate(ok(model="sora-2-2025-12-08"), "acme", load_registry().provider("openai"))
    assert isinstance(d, Valid)


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


def test_input_reference_is_decoded_and_fingerprinted() -> None:
    image = image_bytes(1280, 720)
    d = validate(ok(input_reference=data_url(image)), "acme", REG)
    assert isinstance(d, Valid)
    assert d.spec.image is not None
    assert d.spec.image.data == image
    other = validate(
        ok(input_reference=data_url(image_bytes(1280, 720, "JPEG"), "image/jpeg")), "acme", REG
    )
    plain = validate(ok(), "acme", REG)
    assert isinstance(other, Valid)
    assert isinstance(plain, Valid)
    assert len({d.fingerprint, other.fingerprint, plain.fingerprint}) == 3


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/cat.png",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
        "data:image/png;base64,@@@not-base64@@@",
        "data:image/png;base64,",
        42,
    ],
)
def test_bad_input_reference_is_rejected(value: object) -> None:
    d = validate(ok(input_reference=value), "acme", REG)
    assert isinstance(d, Invalid)
    assert (d.reason, d.field) == ("invalid_image", "input_reference")


def test_image_must_be_what_it_claims_and_match_size() -> None:
    good = image_bytes(1280, 720)
    assert check_image(Image("image/png", good), probe_image(good), "1280x720") is None
    wrong_size = check_image(Image("image/png", good), probe_image(good), "720x1280")
    assert isinstance(wrong_size, Invalid)
    assert "must match size 720x1280" in wrong_size.detail
    as_jpeg = check_image(Image("image/jpeg", good), probe_image(good), "1280x720")
    assert isinstance(as_jpeg, Invalid)
    assert probe_image(b"\x89PNG\r\n\x1a\n garbage") is None
    webp = image_bytes(720, 1280, "WEBP")
    assert check_image(Image("image/webp", webp), probe_image(webp), "720x1280") is None


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000],
)
def test_undecodable_bytes_decode_to_a_refusal_saying_why(raw: bytes) -> None:
    decoded = decode(raw)
    assert isinstance(decoded, Invalid)
    refused = validate(decoded, "acme", REG)
    assert refused == decoded
    assert refused.reason == "invalid_request"
    nested = raw.startswith((b"[[", b'{"a":{"a"'))
    expected = "nested too deeply" if nested else "not JSON"
    assert expected in refused.detail


def test_decode_keeps_any_json() -> None:
    assert decode(b'{"prompt": "x"}') == {"prompt": "x"}
    assert decode(b"[1]") == [1]  # validate() refuses it, with its own reason


PREFIX = "clipline.job.requested"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (f"{PREFIX}.v1.acme", RequestSubject("v1", "acme")),
        (f"{PREFIX}.v1.acme.more", RequestSubject("v1", "acme")),
        (f"{PREFIX}.v1", "invalid_tenant"),
        (f"{PREFIX}.v1.ACME", "invalid_tenant"),
        (f"{PREFIX}.v1.-x", "invalid_tenant"),
        (f"{PREFIX}.v2.acme", "unsupported_version"),
        ("clipline.job.accepted.v1.acme", "invalid_request"),
    ],
)
def test_request_subject_names_version_and_tenant(
    subject: str, expected: RequestSubject | str
) -> None:
    parsed = parse_request_subject(subject, PREFIX)
    if isinstance(expected, RequestSubject):
        assert parsed == expected
    else:
        assert isinstance(parsed, Invalid)
        assert parsed.reason == expected
        assert parsed.detail


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_a_priority_is_kept_and_tells_requests_apart(priority: str) -> None:
    valid = validate(ok(priority=priority), "acme", REG)
    assert isinstance(valid, Valid)
    assert valid.spec.priority == priority
    plain = validate(ok(), "acme", REG)
    assert isinstance(plain, Valid)
    assert plain.spec.priority == "normal"
    # normal is the default, and fingerprints made before priorities existed still match
    assert (valid.fingerprint == plain.fingerprint) == (priority == "normal")


@pytest.mark.parametrize("priority", ["urgent", 1, None, ""])
def test_an_unknown_priority_is_refused(priority: object) -> None:
    bad = validate(ok(priority=priority), "acme", REG)
    assert isinstance(bad, Invalid)
    assert (bad.reason, bad.field) == ("invalid_priority", "priority")
    assert "high, normal, low" in bad.detail


# Exact words, recorded from the hand-written validator before it became the JobRequestV1
# contract plus intake's explanations: clients and the hostile probes rely on them.
@pytest.mark.parametrize(
    ("body", "reason", "field", "detail"),
    [
        ({**ok(), "colour": "b", "width": 1}, "invalid_request", "colour",
         "unknown field(s): colour, width"),
        (ok(schema_version="1"), "unsupported_version", None,
         "schema_version '1' is not supported (1)"),
        (ok(idempotency_key="k" * 256), "invalid_request", "idempotency_key",
         "idempotency_key must be a string of 1..255 chars"),
        (ok(idempotency_key=5), "invalid_request", "idempotency_key",
         "idempotency_key must be a string of 1..255 chars"),
        (ok(tenant=5), "invalid_tenant", None, "body names tenant 5 but was sent as 'acme'"),
        (ok(prompt=" " * 32_001), "invalid_request", "prompt",
         "prompt is required and must be non-empty"),
        (ok(prompt="x" * 32_001), "invalid_request", "prompt", "prompt exceeds 32000 chars"),
        (ok(prompt=7), "invalid_request", "prompt", "prompt is required and must be non-empty"),
        (ok(model=None), "unknown_model", "model",
         "model None is not one of simulator's: sora-2, sora-2-pro"),
        (ok(size=5), "invalid_size", "size", "size 5 is not valid for sora-2: 1280x720, 720x1280"),
        (ok(seconds=4.0), "invalid_seconds", "seconds",
         "seconds 4.0 is not valid for sora-2: 4, 8, 12, 16, 20"),
        (ok(seconds="²"), "invalid_seconds", "seconds",  # once a ValueError out of validate()
         "seconds '²' is not valid for sora-2: 4, 8, 12, 16, 20"),
        (ok(priority=None), "invalid_priority", "priority",
         "priority None is not one of high, normal, low"),
        (ok(input_reference=42), "invalid_image", "input_reference",
         "input_reference must be a base64 data URL"),
        # the first problem in the order clients know wins, registry checks included
        (ok(priority="urgent", model="sora-3", colour="b"), "invalid_request", "colour",
         "unknown field(s): colour"),
        (ok(priority="urgent", seconds=5, prompt=""), "invalid_request", "prompt",
         "prompt is required and must be non-empty"),
        (ok(priority="urgent", seconds=5), "invalid_seconds", "seconds",
         "seconds 5 is not valid for sora-2: 4, 8, 12, 16, 20"),
        (ok(input_reference=42, size="1x1"), "invalid_size", "size",
         "size '1x1' is not valid for sora-2: 1280x720, 720x1280"),
    ],
)  # fmt: skip
def test_refusals_keep_their_exact_words(
    body: dict[str, Any], reason: str, field: str | None, detail: str
) -> None:
    assert validate(body, "acme", REG) == Invalid(reason, detail, field)


@pytest.mark.parametrize("seconds", [" 8 ", "٨", 8])  # int() reads any decimal digits
def test_seconds_may_be_a_string_of_digits(seconds: object) -> None:
    valid = validate(ok(seconds=seconds), "acme", REG)
    assert isinstance(valid, Valid)
    assert valid.spec.seconds == 8


def test_intake_defaults_are_the_contracts() -> None:
    valid = validate({"prompt": "x"}, "acme", REG)
    assert isinstance(valid, Valid)
    spec = valid.spec
    expected = JobRequestV1(prompt="x")
    assert (spec.model, spec.size, spec.seconds, spec.priority) == (
        expected.model, expected.size, expected.seconds, expected.priority
    )  # fmt: skip

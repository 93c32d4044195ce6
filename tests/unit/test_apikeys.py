"""API keys: issued high-entropy and stored hashed, parsed strictly, verified in constant time,
refused when unknown or revoked, touched at most once a minute; the auth decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.apikeys import (
    TOUCH_EVERY,
    ApiKeyInputError,
    ApiKeyRecord,
    Denied,
    authenticate,
    digest,
    issue,
    parse,
    revoked,
    touched,
    verify,
)
from tests.fakes import InMemoryApiKeys

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_an_issued_key_is_high_entropy_and_only_its_hash_is_kept() -> None:
    a, b = issue("acme", "ci", NOW), issue("acme", "ci", NOW)

    assert a.key != b.key
    assert a.record.id != b.record.id
    parsed = parse(a.key)
    assert parsed is not None
    key_id, secret = parsed
    assert key_id == a.record.id
    assert len(secret) == 43  # 32 random bytes
    assert a.record.secret_sha256 == digest(secret)
    assert secret not in a.record.model_dump_json()
    assert "secret_sha256" not in a.record.view()


@pytest.mark.parametrize(
    ("tenant", "name"),
    [("Acme", "x"), ("", "x"), ("a.b", "x"), ("acme\n", "x"), ("acme", ""), ("acme", " "),
     ("acme", "a\nb"), ("acme", "x" * 101)],
)  # fmt: skip
def test_a_key_needs_a_valid_tenant_and_a_printable_name(tenant: str, name: str) -> None:
    with pytest.raises(ApiKeyInputError):
        issue(tenant, name, NOW)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "ck_",
        "sk_0123456789abcdef_" + "a" * 43,
        "ck_0123456789ABCDEF_" + "a" * 43,  # ids are lowercase hex
        "ck_0123456789abcdef_" + "a" * 42,
        "ck_0123456789abcdef_" + "a" * 44,
        "ck_0123456789abcdef_" + "a" * 42 + "!",
        "ck_0123456789abcdef_" + "a" * 43 + "\n",
    ],
)
def test_malformed_keys_do_not_parse(key: str) -> None:
    assert parse(key) is None


def test_verify_refuses_unknown_wrong_and_revoked_keys_alike_but_says_revoked() -> None:
    issued = issue("acme", "ci", NOW)
    _, secret = parse(issued.key) or ("", "")

    assert verify(issued.record, secret) == issued.record
    assert verify(issued.record, "b" * 43) == Denied("the API key is not known")
    assert verify(None, secret) == Denied("the API key is not known")
    gone = revoked(issued.record, NOW)
    assert gone is not None
    assert verify(gone, secret) == Denied("the API key was revoked")


def test_last_use_is_written_at_most_once_a_minute_and_never_on_a_revoked_key() -> None:
    record = issue("acme", "ci", NOW).record

    first = touched(record, NOW)
    assert first is not None
    assert first.last_used_at == NOW
    assert touched(first, NOW + TOUCH_EVERY - timedelta(seconds=1)) is None
    later = touched(first, NOW + TOUCH_EVERY)
    assert later is not None
    assert later.last_used_at == NOW + TOUCH_EVERY
    assert touched(revoked(record, NOW), NOW) is None
    assert touched(None, NOW) is None


def test_revoking_is_once() -> None:
    record = issue("acme", "ci", NOW).record
    gone = revoked(record, NOW)
    assert gone is not None
    assert gone.revoked_at == NOW
    assert revoked(gone, NOW + timedelta(hours=1)) is None
    assert revoked(None, NOW) is None


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "header is needed"),
        ("", "header is needed"),
        ("Basic dXNlcjpwdw==", "must be 'Bearer"),
        ("Bearer", "must be 'Bearer"),
        ("Bearer ", "must be 'Bearer"),
        ("Bearer not-a-key", "malformed"),
        ("Bearer ck_0123456789abcdef_" + "a" * 43, "not known"),
    ],
)
async def test_authenticate_says_why_a_header_does_not_do(header: str | None, says: str) -> None:
    found = await authenticate(InMemoryApiKeys(), header, NOW)
    assert isinstance(found, Denied)
    assert says in found.detail


async def test_authenticate_finds_the_tenant_and_touches_rarely() -> None:
    keys = InMemoryApiKeys()
    issued = await keys.create("acme", "ci", NOW)

    for second in range(120):  # two minutes of one request a second
        found = await authenticate(keys, f"bearer {issued.key}", NOW + timedelta(seconds=second))
        assert isinstance(found, ApiKeyRecord)
        assert found.tenant == "acme"
    assert keys.touches == 2
    await keys.revoke(issued.record.id, NOW)
    assert await authenticate(keys, f"Bearer {issued.key}", NOW) == Denied(
        "the API key was revoked"
    )

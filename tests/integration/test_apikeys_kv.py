"""API keys in the clipline_api_keys bucket on a real nats-server: created once per id,
listed per tenant, revoked by compare-and-set (one key, or a tenant's), touched rarely."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client

from shared.apikeys import ApiKeyRecord, Denied, KvApiKeys, authenticate
from shared.streams import API_KEYS_BUCKET

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def keys(nc: Client) -> KvApiKeys:
    async def kv():  # type: ignore[no-untyped-def]
        return await nc.jetstream().key_value(API_KEYS_BUCKET)

    return KvApiKeys(kv, nc.jetstream)


async def test_a_key_round_trips_hashed_and_is_revoked_for_good(
    keys: KvApiKeys, nc: Client
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    issued = await keys.create(tenant, "ci", NOW)
    raw = await (await nc.jetstream().key_value(API_KEYS_BUCKET)).get(issued.record.id)

    assert raw.value is not None
    assert issued.key.split("_", 2)[2].encode() not in raw.value  # only the hash is stored
    assert await keys.get(issued.record.id) == issued.record
    assert await keys.get("../x") is None
    found = await authenticate(keys, f"Bearer {issued.key}", NOW)
    assert isinstance(found, ApiKeyRecord)
    assert found.tenant == tenant

    revoked = await keys.revoke(issued.record.id, NOW)
    again = await keys.revoke(issued.record.id, NOW + timedelta(minutes=5))
    assert revoked is not None
    assert again is not None
    assert revoked.revoked_at == again.revoked_at == NOW
    assert await authenticate(keys, f"Bearer {issued.key}", NOW) == Denied(
        "the API key was revoked"
    )
    assert await keys.revoke("0123456789abcdef", NOW) is None


async def test_list_and_revoke_tenant_touch_only_that_tenants_keys(keys: KvApiKeys) -> None:
    mine, other = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    a = await keys.create(mine, "a", NOW)
    b = await keys.create(mine, "b", NOW + timedelta(seconds=1))
    c = await keys.create(other, "c", NOW)

    assert [r.id for r in await keys.list(mine)] == [a.record.id, b.record.id]
    assert {a.record.id, b.record.id, c.record.id} <= {r.id for r in await keys.list()}
    done = await keys.revoke_tenant(mine, NOW)
    assert {r.id for r in done} == {a.record.id, b.record.id}
    assert await keys.revoke_tenant(mine, NOW) == []  # already revoked
    still = await keys.get(c.record.id)
    assert still is not None
    assert still.revoked_at is None


async def test_concurrent_uses_touch_once_and_never_undo_a_revocation(keys: KvApiKeys) -> None:
    issued = await keys.create(f"t{uuid.uuid4().hex[:8]}", "busy", NOW)
    header = f"Bearer {issued.key}"

    found = await asyncio.gather(*(authenticate(keys, header, NOW) for _ in range(20)))
    assert all(isinstance(f, ApiKeyRecord) for f in found)
    record = await keys.get(issued.record.id)
    assert record is not None
    assert record.last_used_at == NOW

    await keys.revoke(issued.record.id, NOW)
    await keys.touch(issued.record.id, NOW + timedelta(hours=1))
    after = await keys.get(issued.record.id)
    assert after is not None
    assert (after.revoked_at, after.last_used_at) == (NOW, NOW)

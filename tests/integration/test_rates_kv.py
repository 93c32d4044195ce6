"""The submitters' shared rate state on a real nats-server: replicas on separate connections
take slots by compare-and-set, so together they never exceed one limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from services.submitter.adapters import KvRates
from services.submitter.rates import Granted, Limits, Wait
from shared.streams import RATES_BUCKET
from tests.counting_kv import CountingKv

pytestmark = pytest.mark.integration


@pytest.fixture
async def clients(provisioned: str, admin_creds: str) -> AsyncIterator[list[Client]]:
    # per-test buckets: the admin identity (a service may use only its own bucket)
    made = [await nats.connect(provisioned, user_credentials=admin_creds) for _ in range(3)]
    try:
        yield made
    finally:
        for c in made:
            await c.close()


def rates(nc: Client, provider: str, limits: Limits, now: float) -> KvRates:
    async def get_kv():  # type: ignore[no-untyped-def]
        return await nc.jetstream().key_value(RATES_BUCKET)

    return KvRates(get_kv, provider, lambda m: (m, limits), clock=lambda: now)


async def test_replicas_share_one_bucket_and_one_in_flight_cap(clients: list[Client]) -> None:
    provider = f"p{uuid.uuid4().hex[:8]}"  # a fresh key: a full bucket
    limits = Limits(rpm=300, concurrency=7)  # capacity 10 tokens, 7 creates at once
    replicas = [rates(c, provider, limits, now=1000.0) for c in clients]  # a frozen clock
    results = await asyncio.gather(*(
        replicas[i % 3].acquire("sora-2", f"job{i}", "high", 30.0) for i in range(40)
    ))  # fmt: skip
    granted = [i for i, r in enumerate(results) if isinstance(r, Granted)]
    waits = [r for r in results if isinstance(r, Wait)]
    print(f"40 asks across 3 replicas: {len(granted)} granted (cap 7 in flight, 10 tokens)")
    assert len(granted) == 7
    assert all("in flight" in w.why for w in waits)
    await replicas[0].release("sora-2", f"job{granted[0]}")
    again = await replicas[2].acquire("sora-2", "late", "high", 30.0)
    assert isinstance(again, Granted)  # a released slot is anyone's


async def test_a_429_seen_by_one_replica_holds_back_all(clients: list[Client]) -> None:
    provider = f"p{uuid.uuid4().hex[:8]}"
    limits = Limits(rpm=600, concurrency=100)
    one, other = (
        rates(clients[0], provider, limits, 50.0),
        rates(clients[1], provider, limits, 50.0),
    )
    await one.throttle("sora-2", retry_after=4.0)
    held = await other.acquire("sora-2", "j", "high", 30.0)
    assert isinstance(held, Granted)
    assert held.at == 54.0  # a slot no earlier than the upstream asked, for every replica


async def counted(
    nc: Client, provider: str, limits: Limits, now: float
) -> tuple[KvRates, CountingKv]:
    kv = CountingKv(await nc.jetstream().key_value(RATES_BUCKET))

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    return KvRates(get_kv, provider, lambda m: (m, limits), clock=lambda: now), kv


async def test_the_state_is_read_once_and_written_only_when_it_changes(
    clients: list[Client],
) -> None:
    provider = f"p{uuid.uuid4().hex[:8]}"
    shaper, kv = await counted(clients[0], provider, Limits(rpm=600, concurrency=10), 10.0)
    assert isinstance(await shaper.acquire("sora-2", "a", "high", 30.0), Granted)
    await shaper.release("sora-2", "a")
    assert isinstance(await shaper.acquire("sora-2", "b", "high", 30.0), Granted)
    assert (kv.gets, kv.writes) == (1, 3)  # read once: this process knows what it wrote
    await shaper.release("sora-2", "nobody")  # holds no slot: nothing changes
    assert kv.writes == 3
    assert kv.gets == 2  # "no change" is decided on a state just read, never on a remembered one


async def test_changes_asked_together_go_in_few_writes(clients: list[Client]) -> None:
    provider = f"p{uuid.uuid4().hex[:8]}"
    shaper, kv = await counted(clients[0], provider, Limits(rpm=6000, concurrency=100), 10.0)
    results = await asyncio.gather(
        *(shaper.acquire("sora-2", f"j{i}", "high", 30.0) for i in range(30))
    )
    assert all(isinstance(r, Granted) for r in results)
    assert {r.at for r in results if isinstance(r, Granted)} == {10.0}  # a burst: all at once
    assert kv.writes <= 2  # asked while one write was on its way: grouped, not 30 writes
    other = rates(clients[1], provider, Limits(rpm=6000, concurrency=100), 10.0)
    late = await other.acquire("sora-2", "late", "high", 30.0)
    assert isinstance(late, Granted)
    # What the group wrote is the shared state: 31 slots held, the cap counts them all.
    capped = rates(clients[2], provider, Limits(rpm=6000, concurrency=31), 10.0)
    assert isinstance(await capped.acquire("sora-2", "over", "high", 30.0), Wait)


async def test_a_state_changed_by_another_replica_is_read_again(clients: list[Client]) -> None:
    provider = f"p{uuid.uuid4().hex[:8]}"
    limits = Limits(rpm=600, concurrency=2)
    one, kv = await counted(clients[0], provider, limits, 10.0)
    other = rates(clients[1], provider, limits, 10.0)
    assert isinstance(await one.acquire("sora-2", "a", "high", 30.0), Granted)
    assert isinstance(await other.acquire("sora-2", "b", "high", 30.0), Granted)
    # `one` remembers one slot taken; the bucket says two: the cap of 2 holds anyway.
    assert isinstance(await one.acquire("sora-2", "c", "high", 30.0), Wait)
    assert kv.gets == 2  # its first read, and the read after its remembered state lost

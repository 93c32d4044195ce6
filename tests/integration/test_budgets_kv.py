"""Budgets on a real nats-server: multi-key compare-and-set by atomic batch, no overshoot under
concurrent writers on separate connections, no leak when a writer dies half-way."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.budgets import Charge, Exceeded, Limit, Release, Slot, slots_for, window
from services.pricing_guard.ports import Claim, Reserved
from services.pricing_guard.records import ReservationRecord, open_key, reservation_key
from shared.kvatomic import AtomicKv, AtomicWriteError, GuardError, Outcome
from shared.streams import BUDGETS_BUCKET, ensure_jetstream

pytestmark = pytest.mark.integration
COST = 400_000


async def fresh_bucket(nc: Client) -> str:
    """A budgets bucket of its own (global counters are shared by every job of a bucket)."""
    name = f"budgets_{uuid.uuid4().hex[:10]}"
    js = nc.jetstream()
    await js.create_key_value(KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE))
    config = (await js.stream_info(f"KV_{name}")).config
    config.allow_atomic = True
    await js.update_stream(config)
    return name


def atomic(nc: Client, bucket: str) -> AtomicKv:
    handle: list[object] = []

    async def get_kv():  # type: ignore[no-untyped-def]
        if not handle:
            handle.append(await nc.jetstream().key_value(bucket))
        return handle[0]

    return AtomicKv(get_kv, lambda: nc, bucket)


@pytest.fixture
async def bucket(nc: Client) -> str:
    return await fresh_bucket(nc)


@pytest.fixture
async def clients(provisioned: str, admin_creds: str) -> AsyncIterator[list[Client]]:
    # per-test buckets: the admin identity (a service may use only its own bucket)
    made = [await nats.connect(provisioned, user_credentials=admin_creds) for _ in range(4)]
    try:
        yield made
    finally:
        for c in made:
            await c.close()


def claim(tenant: str, job_id: str | None = None) -> Claim:
    return Claim(
        tenant, job_id or f"job_{uuid.uuid4().hex}", "sora-2", "1280x720", 4, COST,
        datetime.now(UTC),
    )  # fmt: skip


def today(scope: str) -> Slot:
    return Slot(scope, "daily", window("daily", datetime.now(UTC)))


async def test_the_provisioned_budgets_bucket_allows_atomic_batches(nc: Client) -> None:
    # every service provisions on start, several at once: creating the bucket again must work
    await asyncio.gather(*(ensure_jetstream(nc.jetstream()) for _ in range(3)))
    info = await nc.jetstream().stream_info(f"KV_{BUDGETS_BUCKET}")
    assert info.config.allow_atomic is True


async def test_a_batch_with_one_stale_revision_writes_nothing(nc: Client, bucket: str) -> None:
    store = atomic(nc, bucket)
    assert await store.write({"a": b"1", "b": b"1"}, {"a": 0, "b": 0})
    entries = await store.read(["a", "b"])
    # b moves on; a batch still expecting b's old revision must leave a unchanged too
    assert await store.write({"b": b"2"}, {"b": entries["b"].revision})
    stale = {"a": entries["a"].revision, "b": entries["b"].revision}
    assert not await store.write({"a": b"3", "b": b"3"}, stale)
    after = await store.read(["a", "b"])
    assert (after["a"].value, after["b"].value) == (b"1", b"2")


async def test_a_guard_checks_a_key_without_writing_it(nc: Client, bucket: str) -> None:
    """`Nats-Expected-Last-Subject-Sequence-Subject` on the real server, inside an atomic
    batch: a stale guard fails the whole batch (nothing stored), a fresh one commits and leaves
    the guarded key alone, and a key never written has last sequence 0. (The key carrying the
    guard is never at the guarded revision itself: a server checking the carrier instead of the
    guarded key would fail these.)"""
    store = atomic(nc, bucket)
    assert await store.write({"a": b"1", "b": b"1", "g": b"v1"}, {"a": 0, "b": 0, "g": 0})
    g = (await store.read(["g"]))["g"]
    assert await store.write({"g": b"v2"}, {"g": g.revision})  # the guarded key moves on
    before = await store.read(["a", "b", "g"])
    assert before["g"].revision != g.revision
    own = {"a": before["a"].revision}  # `a` expects its own revision, `b` carries the guard

    # a stale guard: the whole batch fails, nothing stored
    assert not await store.write({"a": b"2", "b": b"2"}, own, guards={"g": g.revision})
    # on the first message of the batch (sent as a request) as well as on a later one
    assert not await store.write({"b": b"2", "a": b"2"}, own, guards={"g": g.revision})
    assert await store.read(["a", "b", "g"]) == before

    # a key never written has last sequence 0: any other guard on it fails
    assert not await store.write({"a": b"3", "b": b"3"}, own, guards={"never": 1})
    assert await store.read(["a", "b", "g"]) == before
    assert before["b"].revision != 0
    assert await store.write({"a": b"3", "b": b"3"}, own, guards={"never": 0})
    now = await store.read(["a", "b", "g", "never"])
    assert (now["a"].value, now["b"].value, now["never"].value) == (b"3", b"3", None)

    # a fresh guard commits, and the guarded key is neither written nor moved
    own = {"a": now["a"].revision}
    assert now["b"].revision != before["g"].revision
    assert await store.write({"a": b"4", "b": b"4"}, own, guards={"g": before["g"].revision})
    final = await store.read(["a", "b", "g"])
    assert (final["a"].value, final["b"].value) == (b"4", b"4")
    assert final["g"] == before["g"]

    # no message free to carry the guard: refused before anything is sent
    with pytest.raises(GuardError, match="without an expectation"):
        await store.write({"a": b"5"}, {"a": final["a"].revision}, guards={"g": 1})
    with pytest.raises(GuardError, match="also written"):
        await store.write({"g": b"5", "b": b"5"}, {}, guards={"g": final["g"].revision})
    assert await store.read(["a", "b", "g"]) == final


async def test_transact_retries_a_lost_race_and_deletes(nc: Client, bucket: str) -> None:
    store = atomic(nc, bucket)
    await store.write({"n": b"0"}, {})

    def bump(entries):  # type: ignore[no-untyped-def]
        value = int(entries["n"].value or b"0") + 1
        return Outcome({"n": str(value).encode()}, value)

    results = await asyncio.gather(*(store.transact(["n"], bump) for _ in range(30)))
    assert sorted(results) == list(range(1, 31))  # every increment applied exactly once
    await store.write({"n": None}, {})
    assert (await store.read(["n"]))["n"].value is None
    assert await store.write({"n": b"again"}, {"n": (await store.read(["n"]))["n"].revision})


async def test_replicas_racing_for_a_budget_admit_exactly_what_fits(
    clients: list[Client], bucket: str
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    fits = 7
    replicas = [KvBudgets(atomic(c, bucket)) for c in clients]
    await replicas[0].set_limit("global", "daily", Limit(fits * COST), datetime.now(UTC))
    results = await asyncio.gather(
        *(replicas[i % len(replicas)].reserve(claim(tenant)) for i in range(60))
    )
    admitted = sum(isinstance(r, Reserved) for r in results)
    refused = [r for r in results if isinstance(r, Exceeded)]
    print(f"admitted {admitted} of 60 for a budget of {fits}: overshoot {admitted - fits}")
    assert admitted == fits
    assert len(refused) == 60 - fits
    assert refused[0].left_micros == 0
    usage = await replicas[1].usage(today("global"))
    assert (usage.reserved, usage.jobs) == (fits * COST, fits)
    assert usage.balanced


async def test_a_writer_killed_between_two_scopes_leaks_nothing(
    provisioned: str, nc: Client, bucket: str, admin_creds: str
) -> None:
    tenant, job_id = f"t{uuid.uuid4().hex[:8]}", f"job_{uuid.uuid4().hex}"
    budgets = KvBudgets(atomic(nc, bucket))
    for scope in ("global", f"tenant:{tenant}"):  # counters of both scopes in the batch
        await budgets.set_limit(scope, "daily", Limit(100 * COST), datetime.now(UTC))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.partial_reserver", provisioned, admin_creds,
        bucket, tenant, job_id, str(COST), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"partial "), line
    finally:
        proc.kill()  # SIGKILL half-way through the batch: no commit ever comes
        await proc.wait()
    assert await budgets.reservation(tenant, job_id) is None
    for scope in ("global", f"tenant:{tenant}"):
        assert (await budgets.usage(today(scope))).admitted == 0
    # The redelivered admission (another replica) completes it, counted once everywhere.
    result = await budgets.reserve(claim(tenant, job_id))
    assert isinstance(result, Reserved)
    assert result.fresh
    again = await budgets.reserve(claim(tenant, job_id))
    assert isinstance(again, Reserved)
    assert not again.fresh
    for scope in ("global", f"tenant:{tenant}"):
        usage = await budgets.usage(today(scope))
        assert (usage.reserved, usage.jobs) == (COST, 1)


async def test_a_job_decided_before_is_never_reserved_again_on_a_real_server(
    clients: list[Client], bucket: str
) -> None:
    """A job's `open` key deleted when it closes (or when it is refused, or ends before its
    admission) keeps its delete marker: an admission reaching the store later, from either
    replica, fails its compare-and-set (expecting revision 0) and finds the decision."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    replicas = [KvBudgets(atomic(c, bucket)) for c in clients[:2]]
    now = datetime.now(UTC)
    settled, refused, ended = claim(tenant), claim(tenant), claim(tenant)
    assert isinstance(await replicas[0].reserve(settled), Reserved)
    await replicas[0].settle(
        tenant, settled.job_id, lambda _: Charge(COST, "4 s"), "completed", now
    )
    await replicas[0].set_limit(f"tenant:{tenant}", "daily", Limit(COST), now)
    assert isinstance(await replicas[0].reserve(refused), Exceeded)
    await replicas[0].set_limit(f"tenant:{tenant}", "daily", None, now)
    await replicas[0].settle(
        tenant, ended.job_id, lambda _: Release("x"), "failed", now, admitted=False
    )
    before = await replicas[0].usage(today(f"tenant:{tenant}"))
    for c in (settled, refused, ended):
        first = await replicas[1].reservation(tenant, c.job_id)
        assert first is not None
        again = await asyncio.gather(*(r.reserve(c) for r in replicas))
        assert [(a.fresh, a.reservation) for a in again if isinstance(a, Reserved)] == [
            (False, first),
            (False, first),
        ]
    assert await replicas[1].usage(today(f"tenant:{tenant}")) == before
    assert await replicas[1].open_jobs() == []
    assert [e.job_id for e in await replicas[1].spend(tenant)] == [settled.job_id]


async def test_a_bucket_of_the_older_layout_is_converted_on_a_real_server(
    nc: Client, bucket: str
) -> None:
    """Reservations the older code left (`res` keys; an `open` marker while reserved, none for
    a refused job) are converted once: the refused job's `open` key gets a delete marker
    (written expecting none), so it is never reserved; the reserved one is swept and settled."""
    tenant, now = f"t{uuid.uuid4().hex[:8]}", datetime.now(UTC)
    store = atomic(nc, bucket)
    reserved = ReservationRecord(
        tenant=tenant, job_id="job_open", model="sora-2", size="1280x720", seconds=4,
        estimate_micros=COST, slots=list(slots_for(tenant, now)), reserved_at=now,
    )  # fmt: skip
    refused = reserved.model_copy(
        update={"job_id": "job_refused", "slots": [], "state": "released",
                "charged_micros": 0, "settled_at": now, "refused": "budget_exceeded"}
    )  # fmt: skip
    assert await store.write(
        {
            reservation_key(tenant, "job_open"): reserved.model_dump_json().encode(),
            open_key(tenant, "job_open"): b"{}",
            reservation_key(tenant, "job_refused"): refused.model_dump_json().encode(),
        },
        {},
    )
    budgets = KvBudgets(store)
    assert await budgets.open_jobs() == [(tenant, "job_open")]
    marker = (await store.read([open_key(tenant, "job_refused")]))[open_key(tenant, "job_refused")]
    assert (marker.value, marker.revision > 0) == (None, True)
    again = await budgets.reserve(claim(tenant, "job_refused"))
    assert isinstance(again, Reserved)
    assert (again.fresh, again.reservation.refused) == (False, "budget_exceeded")
    done = await budgets.settle(tenant, "job_open", lambda _: Release("x"), "failed", now)
    assert done is not None
    assert done.fresh
    assert await budgets.open_jobs() == []
    assert [(e.job_id, e.settlement) for e in await budgets.spend(tenant)] == [
        ("job_open", "released")
    ]


async def test_a_stream_without_atomic_publish_is_refused_loudly(nc: Client) -> None:
    """A batch the server stores message by message must not pass for an atomic write."""
    name = f"plain_{uuid.uuid4().hex[:10]}"
    await nc.jetstream().create_key_value(KeyValueConfig(bucket=name, history=1))
    store = atomic(nc, name)
    with pytest.raises(AtomicWriteError, match="atomic"):
        await store.write({"a": b"1", "b": b"1"}, {"a": 0, "b": 0})


async def test_a_limit_set_while_replicas_admit_counts_every_job_exactly(
    clients: list[Client], bucket: str
) -> None:
    """Three replicas admit jobs of a tenant without a limit; meanwhile an admin sets a monthly
    limit of 25 jobs. The jobs admitted before it are folded into its counter, the ones
    decided around it wait or are decided again: exactly 25 are admitted, and the counter is
    what the reservations add up to."""
    tenant, fits = f"t{uuid.uuid4().hex[:8]}", 25
    replicas = [KvBudgets(atomic(c, bucket)) for c in clients[:3]]
    admin = KvBudgets(atomic(clients[3], bucket))
    admitted: list[str] = []
    some_in = asyncio.Event()

    async def producer(budgets: KvBudgets, n: int) -> int:
        for _ in range(n):
            c = claim(tenant)
            if isinstance(await budgets.reserve(c), Reserved):
                admitted.append(c.job_id)
                if len(admitted) >= 6:
                    some_in.set()
        return n

    runs = [asyncio.create_task(producer(r, 30)) for r in replicas]
    await asyncio.wait_for(some_in.wait(), 30)
    now = datetime.now(UTC)
    await admin.set_limit(f"tenant:{tenant}", "monthly", Limit(fits * COST), now)
    await asyncio.wait_for(asyncio.gather(*runs), 120)
    assert len(admitted) == fits
    month = Slot(f"tenant:{tenant}", "monthly", window("monthly", now))
    counter = await admin.usage(month)
    await admin.set_limit(f"tenant:{tenant}", "monthly", None, now)
    folded = await admin.usage(month)  # no limit: folded from the reservations
    assert counter == folded
    assert (counter.reserved, counter.jobs) == (fits * COST, fits)

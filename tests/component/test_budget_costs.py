"""What budgets cost per job on the budgets bucket (reads, writes and scans, counted on the
in-memory AtomicStore): constant as windows and scopes are added, nothing for windows without a
limit, one write per touched counter per batch; and a limit set mid-month counts the month's
earlier spend, exactly, even against admissions decided concurrently under the old view."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.budgets import (
    PERIODS,
    Charge,
    Exceeded,
    Limit,
    Period,
    Release,
    Slot,
    Usage,
    slots_for,
    window,
)
from services.pricing_guard.ports import Claim, Reserved
from services.pricing_guard.records import (
    CATALOG_KEY,
    GUARD_KEY,
    Catalog,
    LimitRecord,
    ReservationRecord,
    counter_key,
    limit_key,
    reservation_key,
    usage_key,
)
from shared.kvatomic import Decide, Entry
from tests.fakes import InMemoryAtomicStore, subject_matches

T = TypeVar("T")
COST = 400_000
TENANT = "acme"
BIG = Limit(10**12)


@dataclass
class Counting:
    """An AtomicStore that counts the keys read, written and the scans made, and can run a
    hook just before a write (to let another writer in between a read and a write)."""

    inner: InMemoryAtomicStore = field(default_factory=InMemoryAtomicStore)
    read_keys: list[str] = field(default_factory=list)
    written_keys: list[str] = field(default_factory=list)
    guarded_keys: list[str] = field(default_factory=list)
    """Keys checked (not written) by a batch: one entry per batch guarding it."""
    scans: int = 0
    before_write: Callable[[Mapping[str, bytes | None]], Awaitable[None]] | None = None
    after_write: Callable[[Mapping[str, bytes | None], bool], Awaitable[None]] | None = None
    """Run right after a write, before anyone else runs: sees the store exactly as it left it."""
    after_scan: Callable[[], Awaitable[None]] | None = None
    yields: bool = False
    catalog_reads: int = 0
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it read the catalog twice or wrote something."""

    def reset(self) -> None:
        self.read_keys, self.written_keys, self.guarded_keys, self.scans = [], [], [], 0

    async def read(self, keys: Sequence[str]) -> dict[str, Entry]:
        self.read_keys += keys
        self.catalog_reads += CATALOG_KEY in keys
        if self.catalog_reads >= 2:
            self.moved.set()
        if self.yields:
            await asyncio.sleep(0)
        return await self.inner.read(keys)

    async def transact(self, keys: Sequence[str], decide: Decide[T]) -> T:
        raise AssertionError("budgets make their own compare-and-set")

    async def write(
        self,
        writes: Mapping[str, bytes | None],
        expected: Mapping[str, int],
        guards: Mapping[str, int] | None = None,
    ) -> bool:
        if self.before_write is not None:
            await self.before_write(writes)
        if self.yields:
            await asyncio.sleep(0)
        self.written_keys += writes
        self.guarded_keys += guards or {}
        done = await self.inner.write(writes, expected, guards)
        if self.after_write is not None:
            await self.after_write(writes, done)
        self.moved.set()
        return done

    async def scan(self, pattern: str) -> list[tuple[str, bytes]]:
        self.scans += 1
        found = await self.inner.scan(pattern)
        if self.yields:  # others go on while the scan's answer travels
            await asyncio.sleep(0)
        if self.after_scan is not None:
            await self.after_scan()
        return found


def claim(tenant: str = TENANT, at: datetime | None = None) -> Claim:
    job_id = f"job_{uuid.uuid4().hex}"
    return Claim(tenant, job_id, "sora-2", "1280x720", 4, COST, at or datetime.now(UTC))


async def limit_all(budgets: KvBudgets, scopes: Sequence[str], periods: Sequence[Period]) -> None:
    for scope in scopes:
        for period in periods:
            await budgets.set_limit(scope, period, BIG, datetime.now(UTC))


@dataclass(frozen=True)
class Cost:
    reads: int
    writes: int
    scans: int
    keys: frozenset[str]
    guards: int = 0
    written: frozenset[str] = frozenset()


async def cost_of(store: Counting, work: Awaitable[object]) -> Cost:
    store.reset()
    await work
    keys = frozenset(store.read_keys) | frozenset(store.written_keys)
    return Cost(
        len(store.read_keys), len(store.written_keys), store.scans, keys,
        len(store.guarded_keys), frozenset(store.written_keys),
    )  # fmt: skip


def admits(writes: Mapping[str, bytes | None]) -> bool:
    """Is this an admission's batch (it writes a reservation under an `open` key)?"""
    return any(k.startswith("open.") and v not in (None, b"{}") for k, v in writes.items())


def kinds(keys: frozenset[str]) -> set[str]:
    """Keys by kind: a job's own keys by prefix, shared keys by name."""
    return {k.split(".")[0] if k.split(".")[0] in ("res", "open", "spend") else k for k in keys}


LAYOUTS: dict[str, Callable[[KvBudgets], Awaitable[None]]] = {
    "no limit anywhere": lambda b: limit_all(b, [], []),
    "one period of the tenant": lambda b: limit_all(b, [f"tenant:{TENANT}"], ["daily"]),
    "one period of each scope": lambda b: limit_all(b, ["global", f"tenant:{TENANT}"], ["daily"]),
    "every period of each scope, and 50 more tenants": lambda b: limit_all(
        b, ["global", f"tenant:{TENANT}", *(f"tenant:t{i}" for i in range(50))], PERIODS
    ),
}


async def admission_and_settlement_costs(layout: str) -> tuple[Cost, Cost]:
    store = Counting()
    budgets = KvBudgets(store)
    await LAYOUTS[layout](budgets)
    await budgets.reserve(claim())  # the first reads the catalog: later ones know what to read
    first = claim()
    admission = await cost_of(store, budgets.reserve(first))
    bill = Charge(COST, "produced")
    settlement = await cost_of(
        store, budgets.settle(TENANT, first.job_id, lambda _: bill, "completed", datetime.now(UTC))
    )
    return admission, settlement


async def test_admission_and_settlement_cost_the_same_however_many_windows_and_scopes() -> None:
    costs = {layout: await admission_and_settlement_costs(layout) for layout in LAYOUTS}
    for layout, (admission, settlement) in costs.items():
        print(f"{layout:50} admission {admission}  settlement {settlement}")
        assert admission.scans == settlement.scans == 0
        # the catalog and at most one counter key per scope; the job's `open` key (admission:
        # its reservation, plus the `guard` key carrying the catalog's check, once per batch;
        # settlement: the `open` key deleted, the closed reservation under its `res` key)
        assert admission.reads <= 3, layout
        assert admission.writes <= 4, layout
        assert settlement.reads <= 4, layout
        assert settlement.writes <= 4, layout
        assert admission.guards == settlement.guards == 1, layout  # the catalog, not written
        assert not any(k.startswith("count.tenant.t") for k in admission.keys | settlement.keys)
    one_each = costs["one period of each scope"]
    every = costs["every period of each scope, and 50 more tenants"]
    assert [(c.reads, c.writes) for c in every] == [(c.reads, c.writes) for c in one_each]
    assert {kinds(c.keys) == kinds(d.keys) for c, d in zip(every, one_each, strict=True)} == {True}


async def test_windows_without_a_limit_cost_nothing_at_admission() -> None:
    admission, settlement = await admission_and_settlement_costs("no limit anywhere")
    assert kinds(admission.keys) == {CATALOG_KEY, "open", GUARD_KEY}
    # the catalog; the reservation under `open` (and the batch's guard key: one per batch)
    assert (admission.reads, admission.writes) == (1, 2)
    assert kinds(admission.written) == {"open", GUARD_KEY}  # the catalog is guarded, not written
    assert kinds(settlement.keys) == {CATALOG_KEY, "res", "open"}
    assert (settlement.reads, settlement.writes) == (2, 2)  # the catalog, `open`; `open`, `res`
    assert kinds(settlement.written) == {"res", "open"}  # the closed reservation is the ledger
    tenant_only, _ = await admission_and_settlement_costs("one period of the tenant")
    assert kinds(tenant_only.keys) == {
        CATALOG_KEY, "open", GUARD_KEY, counter_key(f"tenant:{TENANT}")
    }  # fmt: skip


async def test_a_batch_writes_each_touched_counter_once() -> None:
    store = Counting()
    budgets = KvBudgets(store)
    await limit_all(budgets, ["global", f"tenant:{TENANT}"], PERIODS)
    await budgets.reserve(claim())
    store.reset()
    claims = [claim() for _ in range(20)]
    results = await asyncio.gather(*(budgets.reserve(c) for c in claims))
    assert all(isinstance(r, Reserved) and r.fresh for r in results)
    assert sorted(store.read_keys) == sorted(
        [CATALOG_KEY, counter_key("global"), counter_key(f"tenant:{TENANT}")]
    )
    assert len(store.written_keys) == 20 + 2 + 1  # `open` per job; 2 counters; the guard key
    assert CATALOG_KEY not in store.written_keys
    assert store.guarded_keys == [CATALOG_KEY]  # one batch, guarded by the catalog
    daily = await budgets.usage(Slot("global", "daily", window("daily", datetime.now(UTC))))
    assert (daily.reserved, daily.jobs) == (21 * COST, 21)


async def test_settlements_at_the_same_moment_are_written_in_one_batch() -> None:
    store = Counting()
    budgets = KvBudgets(store)
    await limit_all(budgets, ["global", f"tenant:{TENANT}"], PERIODS)
    claims = [claim() for _ in range(20)]
    await asyncio.gather(*(budgets.reserve(c) for c in claims))
    store.reset()
    bill = Charge(COST // 2, "2 s")
    settled = await asyncio.gather(
        *(budgets.settle(TENANT, c.job_id, lambda _: bill, "completed", c.at) for c in claims)
    )
    assert all(s is not None and s.fresh for s in settled)
    assert CATALOG_KEY not in store.written_keys
    assert store.guarded_keys == [CATALOG_KEY]
    assert store.written_keys.count(counter_key("global")) == 1
    assert len(store.written_keys) == 2 * 20 + 2  # `res` and `open` per job; 2 counters
    daily = await budgets.usage(Slot("global", "daily", window("daily", datetime.now(UTC))))
    assert (daily.reserved, daily.settled, daily.released) == (0, 10 * COST, 10 * COST)


# -- a limit set on a window that had none ----------------------------------------------------


def month(scope: str = f"tenant:{TENANT}") -> Slot:
    return Slot(scope, "monthly", window("monthly", datetime.now(UTC)))


async def test_a_limit_set_mid_month_counts_what_the_month_spent_before_it() -> None:
    budgets = KvBudgets(InMemoryAtomicStore())
    jobs = [claim() for _ in range(4)]
    for c in jobs:
        assert isinstance(await budgets.reserve(c), Reserved)
    now = datetime.now(UTC)
    await budgets.settle(TENANT, jobs[0].job_id, lambda _: Charge(300_000, "3 s"), "completed", now)
    await budgets.settle(TENANT, jobs[1].job_id, lambda _: Release("not sent"), "failed", now)
    await budgets.settle(TENANT, jobs[2].job_id, lambda _: Charge(COST, "4 s"), "completed", now)
    # spent $0.30 + $0.40, $0.40 still reserved: $1.10 used before any limit existed
    before = Usage(admitted=4 * COST, reserved=COST, settled=700_000, released=500_000, jobs=4)
    assert await budgets.usage(month()) == before  # folded from the reservations
    assert sum(e.amount_micros for e in await budgets.spend(TENANT)) == 700_000

    await budgets.set_limit(f"tenant:{TENANT}", "monthly", Limit(1_100_000 + COST), now)
    assert await budgets.usage(month()) == before  # now the counter, started from the fold
    assert isinstance(await budgets.reserve(claim()), Reserved)  # $1.50 of $1.50
    over = await budgets.reserve(claim())
    assert isinstance(over, Exceeded)
    assert over.left_micros == 0
    # settling a job reserved before the limit moves the counter it was folded into
    await budgets.settle(TENANT, jobs[3].job_id, lambda _: Release("x"), "failed", now)
    assert (await budgets.usage(month())).used == 1_100_000
    assert isinstance(await budgets.reserve(claim()), Reserved)


async def test_an_admission_decided_before_a_limit_is_set_is_counted_by_it() -> None:
    """The race: a batch reads 'no limit', a limit is set (its counter folded) before the batch
    writes; the batch must not land uncounted. Its compare-and-set fails (the catalog moved)
    and it is decided again under the limit."""
    shared = InMemoryAtomicStore()
    racer = Counting(shared)
    replica, admin = KvBudgets(racer), KvBudgets(shared)
    for _ in range(3):
        await admin.reserve(claim())
    fired = asyncio.Event()

    async def set_the_limit_first(writes: Mapping[str, bytes | None]) -> None:
        if not fired.is_set() and admits(writes):
            fired.set()
            await admin.set_limit(f"tenant:{TENANT}", "monthly", Limit(4 * COST), datetime.now(UTC))

    racer.before_write = set_the_limit_first
    assert isinstance(await replica.reserve(claim()), Reserved)
    assert fired.is_set()
    counted = await admin.usage(month())
    assert (counted.reserved, counted.jobs) == (4 * COST, 4)  # the racer's job counted
    assert isinstance(await replica.reserve(claim()), Exceeded)  # and the limit is full


async def test_a_refusal_decided_before_a_limit_is_raised_is_decided_again() -> None:
    """A batch of refusals only is guarded all the same (its refused reservation, written under
    `res` without an expectation of its own, carries the catalog's check): a limit raised
    between its read and its write makes it fail, and the job is admitted under the new
    limit."""
    shared = InMemoryAtomicStore()
    racer = Counting(shared)
    replica, admin = KvBudgets(racer), KvBudgets(shared)
    now = datetime.now(UTC)
    await admin.set_limit(f"tenant:{TENANT}", "monthly", Limit(COST), now)
    assert isinstance(await replica.reserve(claim()), Reserved)  # full
    fired = asyncio.Event()

    async def raise_the_limit_first(writes: Mapping[str, bytes | None]) -> None:
        if not fired.is_set() and any(k.startswith("res.") for k in writes):
            fired.set()
            assert GUARD_KEY not in writes
            assert not admits(writes)
            await admin.set_limit(f"tenant:{TENANT}", "monthly", Limit(2 * COST), now)

    racer.before_write = raise_the_limit_first
    assert isinstance(await replica.reserve(claim()), Reserved)  # refused, then decided again
    assert fired.is_set()
    assert CATALOG_KEY not in racer.written_keys
    assert isinstance(await replica.reserve(claim()), Exceeded)


async def test_jobs_of_a_scope_wait_while_its_new_limit_is_folded() -> None:
    """A job admitted while a new limit's counter is being folded from the reservations (the
    fold has read them, its counter is not written yet) waits, then is counted by it: it
    neither slips in uncounted nor is counted twice."""
    shared = InMemoryAtomicStore()
    admin_store, replica_store = Counting(shared), Counting(shared)
    admin, replica = KvBudgets(admin_store), KvBudgets(replica_store)
    for _ in range(3):
        await admin.reserve(claim())
    await replica.reserve(claim())  # the replica has read the catalog (no limit) before
    replica_store.catalog_reads = 0
    replica_store.moved.clear()
    racing: list[asyncio.Task[object]] = []

    async def admit_during_the_fold() -> None:
        if racing:  # the fold scans twice (open reservations, closed ones): race the first
            return
        racing.append(asyncio.create_task(replica.reserve(claim())))
        await asyncio.wait_for(replica_store.moved.wait(), 10)  # it wrote, or looked twice

    admin_store.after_scan = admit_during_the_fold
    await admin.set_limit(f"tenant:{TENANT}", "monthly", Limit(6 * COST), datetime.now(UTC))
    assert isinstance(await asyncio.wait_for(racing[0], 10), Reserved)
    counted = await admin.usage(month())
    assert (counted.reserved, counted.jobs) == (5 * COST, 5)
    assert isinstance(await replica.reserve(claim()), Reserved)
    assert isinstance(await replica.reserve(claim()), Exceeded)


async def test_a_settlement_during_the_fold_waits_and_moves_the_new_counter() -> None:
    shared = InMemoryAtomicStore()
    admin_store, replica_store = Counting(shared), Counting(shared)
    admin, replica = KvBudgets(admin_store), KvBudgets(replica_store)
    jobs = [claim() for _ in range(3)]
    for c in jobs:
        await replica.reserve(c)
    replica_store.catalog_reads = 0
    replica_store.moved.clear()
    racing: list[asyncio.Task[object]] = []
    charge = Charge(100_000, "1 s")

    async def settle_during_the_fold() -> None:
        if racing:
            return
        racing.append(
            asyncio.create_task(
                replica.settle(TENANT, jobs[0].job_id, lambda _: charge, "completed", jobs[0].at)
            )
        )
        await asyncio.wait_for(replica_store.moved.wait(), 10)

    admin_store.after_scan = settle_during_the_fold
    await admin.set_limit(f"tenant:{TENANT}", "monthly", Limit(10 * COST), datetime.now(UTC))
    await asyncio.wait_for(racing[0], 10)
    counted = await admin.usage(month())
    assert counted == Usage(
        admitted=3 * COST, reserved=2 * COST, settled=100_000, released=COST - 100_000, jobs=3
    )


def admitted_in(store: InMemoryAtomicStore, scope: str) -> int:
    """Jobs of `scope` holding a reservation (not refused) in the store as it is now."""
    tenants = "*" if scope == "global" else scope.removeprefix("tenant:")
    values = [
        v
        for k, v in store.values.items()
        if v not in (None, b"{}") and any(subject_matches(f"{kind}.{tenants}.*", k)
                                           for kind in ("open", "res"))
    ]  # fmt: skip
    records = [ReservationRecord.model_validate_json(v) for v in values]
    return sum(1 for r in records if r.refused is None and r.slots)


@pytest.mark.parametrize("scope", [f"tenant:{TENANT}", "global"])
async def test_replicas_admitting_while_a_limit_is_set_admit_exactly_what_fits(scope: str) -> None:
    """Two replicas admit jobs one at a time (their reads and writes interleaved) while an
    admin sets a monthly limit of 30 jobs: the limit binds from the moment it lands (pending),
    counting every job admitted before it, so exactly max(30, admitted before it landed) are
    admitted in all; the counter equals the fold of the reservations, and another tenant's
    jobs pass when the limit is its own. (The limit may land after more than 30 jobs are in:
    those were admitted before any limit existed; the limit counts them and refuses every
    later job.)"""
    store = Counting(yields=True)
    replicas = [KvBudgets(store), KvBudgets(store)]
    admin = KvBudgets(store)
    admitted: list[Claim] = []  # the tenant's, in order
    some_in = asyncio.Event()
    landed: list[int] = []  # jobs of the scope admitted when the limit landed (pending)

    async def producer(budgets: KvBudgets, tenant: str, n: int) -> list[bool]:
        results = []
        for _ in range(n):
            c = claim(tenant)
            ok = isinstance(await budgets.reserve(c), Reserved)
            results.append(ok)
            if ok and tenant == TENANT:
                admitted.append(c)
                if len(admitted) >= 8:
                    some_in.set()
        return results

    async def count_when_pending(writes: Mapping[str, bytes | None], done: bool) -> None:
        catalog = writes.get(CATALOG_KEY)
        if done and not landed and catalog and b'"pending_since":"' in catalog:
            landed.append(admitted_in(store.inner, scope))

    store.after_write = count_when_pending
    runs = [
        asyncio.create_task(producer(replicas[0], TENANT, 30)),
        asyncio.create_task(producer(replicas[1], TENANT, 30)),
        asyncio.create_task(producer(replicas[1], "other", 10)),
    ]
    await asyncio.wait_for(some_in.wait(), 10)
    await admin.set_limit(scope, "monthly", Limit(30 * COST), datetime.now(UTC))
    *mine, others = await asyncio.wait_for(asyncio.gather(*runs), 30)
    total = sum(mine[0]) + sum(mine[1]) + (sum(others) if scope == "global" else 0)
    (before,) = landed
    assert before >= 8
    assert total == max(30, before)
    if scope != "global":
        assert all(others)
    counter = await admin.usage(month(scope))
    store.inner.values.pop(CATALOG_KEY)  # without the catalog, usage() folds the reservations
    folded = await KvBudgets(store.inner).usage(month(scope))
    assert counter == folded
    assert (counter.reserved, counter.jobs) == (total * COST, total)


async def test_a_limit_set_while_batches_land_wins_its_first_compare_and_set() -> None:
    """Admission batches landing between the admin's read and write of the catalog do not
    make the limit's compare-and-set fail (batches check the catalog, never write it): it
    lands at once. The jobs admitted before it (under no limit, past what it allows) are
    counted by it (its counter is the fold), and it refuses every later job."""
    shared = InMemoryAtomicStore()
    admin_store = Counting(shared)
    admin, replica = KvBudgets(admin_store), KvBudgets(shared)
    for _ in range(2):
        assert isinstance(await replica.reserve(claim()), Reserved)
    landed = 0

    async def admit_first(writes: Mapping[str, bytes | None]) -> None:
        nonlocal landed
        if b'"pending_since":"' in (writes.get(CATALOG_KEY) or b"") and landed < 3:
            for _ in range(3):  # batches land between the admin's read and write of the catalog
                assert isinstance(await replica.reserve(claim()), Reserved)
                landed += 1

    admin_store.before_write = admit_first
    await admin.set_limit(f"tenant:{TENANT}", "monthly", Limit(3 * COST), datetime.now(UTC))
    assert landed == 3
    assert shared.conflicts == 0  # nothing lost: not the limit, not the batches
    assert admin_store.written_keys.count(CATALOG_KEY) == 2  # pending, then active
    counted = await admin.usage(month())
    assert (counted.reserved, counted.jobs) == (5 * COST, 5)  # 2 + 3, over the limit's 3
    assert isinstance(await replica.reserve(claim()), Exceeded)  # nothing more once it binds
    shared.values.pop(CATALOG_KEY)
    assert await KvBudgets(shared).usage(month()) == counted


async def test_a_limit_lands_promptly_while_two_replicas_admit_continuously() -> None:
    """The starvation this guards against: two replicas admit without pause, and before each
    of the admin's writes of the catalog both land another batch. When batches wrote the
    catalog back as their guard, every such write lost its compare-and-set and set_limit
    gave up (AtomicConflictError) after MAX_ATTEMPTS: a limit failed to land exactly while
    spend ran. Now it lands on its first try, and binds."""
    shared = InMemoryAtomicStore()
    admin_store = Counting(shared)
    stores = [Counting(shared), Counting(shared)]
    replicas = [KvBudgets(s) for s in stores]
    admin = KvBudgets(admin_store)
    landed = [asyncio.Event(), asyncio.Event()]
    batches = [0, 0]
    stop = asyncio.Event()

    def counting(i: int) -> Callable[[Mapping[str, bytes | None], bool], Awaitable[None]]:
        async def after(writes: Mapping[str, bytes | None], done: bool) -> None:
            if done and admits(writes):
                batches[i] += 1
                landed[i].set()

        return after

    for i, store in enumerate(stores):
        store.after_write = counting(i)

    async def admit(budgets: KvBudgets) -> int:
        n = 0
        while not stop.is_set():
            n += isinstance(await budgets.reserve(claim()), Reserved)
        return n

    attempts = 0

    async def both_replicas_land_first(writes: Mapping[str, bytes | None]) -> None:
        nonlocal attempts
        if b'"pending_since":"' in (writes.get(CATALOG_KEY) or b""):
            attempts += 1
            for event in landed:
                event.clear()
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in landed)), 10)

    runs = [asyncio.create_task(admit(r)) for r in replicas]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in landed)), 10)
        admin_store.before_write = both_replicas_land_first
        limit = Limit(200 * COST)
        await asyncio.wait_for(
            admin.set_limit(f"tenant:{TENANT}", "monthly", limit, datetime.now(UTC)), 30
        )
        assert attempts == 1  # the first compare-and-set of the pending limit won
        assert [r.limit_micros for r in await admin.limits()] == [limit.limit_micros]
        catalog = Catalog.model_validate_json(shared.values[CATALOG_KEY] or b"")
        assert catalog.active(f"tenant:{TENANT}", "monthly") is not None  # no longer pending
    finally:
        stop.set()
        admitted = await asyncio.wait_for(asyncio.gather(*runs), 30)
    assert min(batches) >= 2  # both kept admitting, before and while the limit was set
    counted = await admin.usage(month())
    assert counted.jobs == sum(admitted) <= 200  # every job counted, and the limit binds
    shared.values.pop(CATALOG_KEY)
    assert await KvBudgets(shared).usage(month()) == counted


# -- a deployment with the keys of before -------------------------------------------------------


async def test_limits_and_counters_of_the_old_layout_are_converted_once() -> None:
    store = InMemoryAtomicStore()
    now = datetime.now(UTC)
    daily = Slot(f"tenant:{TENANT}", "daily", window("daily", now))
    old_limit = LimitRecord(
        scope=daily.scope, period="daily", limit_micros=3 * COST, updated_at=now
    )
    old_usage = Usage(admitted=2 * COST, reserved=2 * COST, jobs=2)
    await store.write(
        {
            limit_key(daily.scope, "daily"): old_limit.model_dump_json().encode(),
            usage_key(
                daily
            ): f'{{"admitted": {2 * COST}, "reserved": {2 * COST}, "jobs": 2}}'.encode(),
        },
        {},
    )
    open_before = ReservationRecord(
        tenant=TENANT, job_id="job_old", model="sora-2", size="1280x720", seconds=4,
        estimate_micros=COST, slots=list(slots_for(TENANT, now)), reserved_at=now,
    )  # fmt: skip
    await store.write(
        {reservation_key(TENANT, "job_old"): open_before.model_dump_json().encode()}, {}
    )
    budgets = KvBudgets(store)
    assert [r.limit_micros for r in await budgets.limits()] == [3 * COST]
    assert await budgets.usage(daily) == old_usage
    assert store.values[limit_key(daily.scope, "daily")] is None  # moved into the catalog
    assert isinstance(await budgets.reserve(claim(at=now)), Reserved)  # $1.20 of $1.20
    assert isinstance(await budgets.reserve(claim(at=now)), Exceeded)
    # a job reserved before the upgrade settles into the converted counter
    await budgets.settle(TENANT, "job_old", lambda _: Release("x"), "failed", now)
    assert (await budgets.usage(daily)).used == 2 * COST
    assert isinstance(await budgets.reserve(claim(at=now)), Reserved)

"""Where a job's budget keys live (its reservation under `open` while reserved, under `res` once
closed): an admission of a job decided before never reserves it again, whichever way it was
decided, even when it reaches the store (the handler's read raced); an ending settles once; and
a bucket written by the layout before (`res` + `open` marker + `spend` keys) still works."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.budgets import Charge, Dispute, Limit, Release, Slot, slots_for, window
from services.pricing_guard.ports import Claim, Reserved
from services.pricing_guard.records import (
    LAYOUT_KEY,
    ReservationRecord,
    SpendEntry,
    dispute_key,
    open_key,
    reservation_key,
    spend_key,
)
from tests.fakes import InMemoryAtomicStore

COST = 400_000
TENANT = "acme"


def claim(at: datetime | None = None) -> Claim:
    job_id = f"job_{uuid.uuid4().hex}"
    return Claim(TENANT, job_id, "sora-2", "1280x720", 4, COST, at or datetime.now(UTC))


def lifetime() -> Slot:
    return Slot("global", "lifetime", "lifetime")


def daily() -> Slot:
    return Slot("global", "daily", window("daily", datetime.now(UTC)))


async def test_an_open_reservation_is_one_key_and_a_closed_one_another() -> None:
    store = InMemoryAtomicStore()
    budgets = KvBudgets(store)
    c = claim()
    assert isinstance(await budgets.reserve(c), Reserved)
    assert store.values.get(reservation_key(TENANT, c.job_id)) is None
    assert await budgets.open_jobs() == [(TENANT, c.job_id)]
    now = datetime.now(UTC)
    await budgets.settle(TENANT, c.job_id, lambda _: Charge(COST // 2, "2 s"), "completed", now)
    assert store.values[open_key(TENANT, c.job_id)] is None  # deleted: its marker stays
    assert store.revisions[open_key(TENANT, c.job_id)] > 0
    assert await budgets.open_jobs() == []
    record = await budgets.reservation(TENANT, c.job_id)
    assert record is not None
    assert (record.state, record.charged_micros, record.outcome) == (
        "charged",
        COST // 2,
        "completed",
    )
    (entry,) = await budgets.spend(TENANT)
    assert (entry.job_id, entry.amount_micros, entry.seconds, entry.outcome, entry.day) == (
        c.job_id, COST // 2, 2, "completed", window("daily", c.at),
    )  # fmt: skip


async def decided(budgets: KvBudgets, how: str) -> Claim:
    """A job decided `how`: settled (charged), refused, ended before its admission, disputed."""
    now = datetime.now(UTC)
    c = claim()
    if how == "refused":
        await budgets.set_limit("global", "lifetime", Limit(COST // 2), now)
        assert not isinstance(await budgets.reserve(c), Reserved)
        await budgets.set_limit("global", "lifetime", None, now)  # room again
        return c
    if how == "ended before its admission":
        await budgets.settle(
            TENANT, c.job_id, lambda _: Release("x"), "failed", now, admitted=False
        )
        return c
    assert isinstance(await budgets.reserve(c), Reserved)
    decision = Charge(COST, "4 s") if how == "charged" else Dispute("unknown")
    await budgets.settle(TENANT, c.job_id, lambda _: decision, "timed_out", now)
    return c


@pytest.mark.parametrize("how", ["charged", "refused", "ended before its admission", "disputed"])
async def test_an_admission_of_a_job_decided_before_reserves_nothing(how: str) -> None:
    """The admission reaches the store (as when two copies race past the handler's read): the
    job's `open` key is no longer at revision 0, so its write fails and it finds the decision."""
    store = InMemoryAtomicStore()
    budgets, replica = KvBudgets(store), KvBudgets(store)
    c = await decided(budgets, how)
    before = await budgets.usage(daily())
    first = await budgets.reservation(TENANT, c.job_id)
    assert first is not None

    again = await asyncio.gather(replica.reserve(c), budgets.reserve(c))
    for result in again:
        assert isinstance(result, Reserved)
        assert not result.fresh
        assert result.reservation == first
    assert await budgets.usage(daily()) == before
    assert await budgets.open_jobs() == []


async def test_an_ending_settles_once_however_many_copies_race() -> None:
    store = InMemoryAtomicStore()
    budgets, replica = KvBudgets(store), KvBudgets(store)
    c = claim()
    assert isinstance(await budgets.reserve(c), Reserved)
    now = datetime.now(UTC)
    settled = await asyncio.gather(
        *(
            b.settle(TENANT, c.job_id, lambda _: Charge(COST, "4 s"), "completed", now)
            for b in (budgets, replica, budgets, replica)
        )
    )
    assert sorted(s.fresh for s in settled if s is not None) == [False, False, False, True]
    usage = await budgets.usage(daily())
    assert (usage.admitted, usage.reserved, usage.settled) == (COST, 0, COST)
    assert len(await budgets.spend()) == 1


async def test_a_dispute_is_listed_then_resolved_into_the_ledger() -> None:
    store = InMemoryAtomicStore()
    budgets = KvBudgets(store)
    c = await decided(budgets, "disputed")
    assert [r.job_id for r in await budgets.disputes()] == [c.job_id]
    assert await budgets.spend() == []
    resolved = await budgets.resolve(TENANT, c.job_id, Release("refunded"), datetime.now(UTC))
    assert resolved is not None
    assert resolved.fresh
    again = await budgets.resolve(TENANT, c.job_id, Release("refunded"), datetime.now(UTC))
    assert again is not None
    assert not again.fresh
    assert await budgets.disputes() == []
    (entry,) = await budgets.spend(TENANT)
    assert (entry.settlement, entry.outcome, entry.amount_micros) == ("released", "resolved", 0)


# -- a bucket written by the layout before --------------------------------------------------


def old_record(job_id: str, at: datetime, **changes: object) -> ReservationRecord:
    record = ReservationRecord(
        tenant=TENANT, job_id=job_id, model="sora-2", size="1280x720", seconds=4,
        estimate_micros=COST, slots=list(slots_for(TENANT, at)), reserved_at=at,
    )  # fmt: skip
    return record.model_copy(update=changes)


async def test_a_bucket_of_the_layout_before_is_converted_and_read_where_it_is() -> None:
    """What the previous code left: a reserved job (`res` + `open` marker), a settled one (`res`
    charged, `open` deleted, a `spend` line), a refused one and one closed before its admission
    (`res` only), a disputed one (`res` + dispute marker). After the upgrade every one is found,
    none is reserved again, the reserved one is swept and settles once, the dispute resolves,
    and the ledger holds the old line and the new ones."""
    store = InMemoryAtomicStore()
    now = datetime.now(UTC)
    ids = {k: f"job_{k}" for k in ("open", "charged", "refused", "closed", "disputed")}
    charged = old_record(
        ids["charged"], now, state="charged", charged_micros=COST, settled_at=now, why="4 s"
    )
    line = SpendEntry(
        tenant=TENANT, job_id=ids["charged"], model="sora-2", size="1280x720", seconds=4,
        amount_micros=COST, estimate_micros=COST, settlement="charged", outcome="completed",
        why="4 s", day=window("daily", now), settled_at=now,
    )  # fmt: skip
    refused = old_record(
        ids["refused"], now, slots=[], state="released", charged_micros=0, settled_at=now,
        refused="budget_exceeded", why="over",
    )  # fmt: skip
    closed = old_record(
        ids["closed"], now, slots=[], estimate_micros=0, state="released", charged_micros=0,
        settled_at=now, why="ended before any reservation",
    )  # fmt: skip
    disputed = old_record(ids["disputed"], now, state="disputed", settled_at=now, why="?")
    for job_id, record in [
        (ids["open"], old_record(ids["open"], now)),
        (ids["charged"], charged),
        (ids["refused"], refused),
        (ids["closed"], closed),
        (ids["disputed"], disputed),
    ]:
        await store.write({reservation_key(TENANT, job_id): record.model_dump_json().encode()}, {})
    await store.write(
        {
            open_key(TENANT, ids["open"]): b"{}",
            open_key(TENANT, ids["charged"]): b"{}",
            open_key(TENANT, ids["disputed"]): b"{}",
        },
        {},
    )
    await store.write(
        {
            open_key(TENANT, ids["charged"]): None,
            open_key(TENANT, ids["disputed"]): None,
            spend_key(TENANT, ids["charged"]): line.model_dump_json().encode(),
            dispute_key(TENANT, ids["disputed"]): b"{}",
        },
        {},
    )
    refused_open = store.revisions.get(open_key(TENANT, ids["refused"]), 0)
    assert refused_open == 0

    budgets, replica = KvBudgets(store), KvBudgets(store)
    assert await budgets.open_jobs() == [(TENANT, ids["open"])]
    assert store.values[LAYOUT_KEY] is not None  # converted once
    assert store.revisions[open_key(TENANT, ids["refused"])] > 0  # decided: never again
    for kind, job_id in ids.items():
        found = await replica.reservation(TENANT, job_id)
        assert found is not None, kind
        again = await replica.reserve(
            Claim(TENANT, job_id, "sora-2", "1280x720", 4, COST, datetime.now(UTC))
        )
        assert isinstance(again, Reserved), kind
        assert (again.fresh, again.reservation) == (False, found), kind
    assert [r.job_id for r in await budgets.disputes()] == [ids["disputed"]]
    assert await budgets.spend() == [line]

    # the job reserved before the upgrade settles, once
    bill = Charge(COST // 4, "1 s")
    settled = await asyncio.gather(
        budgets.settle(TENANT, ids["open"], lambda _: bill, "completed", now),
        replica.settle(TENANT, ids["open"], lambda _: bill, "completed", now),
    )
    assert sorted(s.fresh for s in settled if s is not None) == [False, True]
    assert await budgets.open_jobs() == []
    await budgets.resolve(TENANT, ids["disputed"], Charge(COST, "4 s"), now)
    assert await budgets.disputes() == []
    assert [(e.job_id, e.amount_micros, e.outcome) for e in await budgets.spend()] == [
        (ids["charged"], COST, "completed"),
        (ids["disputed"], COST, "resolved"),
        (ids["open"], COST // 4, "completed"),
    ]
    folded = await budgets.usage(lifetime())
    assert (folded.jobs, folded.reserved, folded.settled) == (3, 0, COST + COST + COST // 4)

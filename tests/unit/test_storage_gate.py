"""storage's priority gate: slots, deadline order, and nothing leaked by cancellation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.storage.gate import PriorityGate, priority

T0 = datetime(2026, 12, 3, 12, tzinfo=UTC)
WAIT = 2.0
"""The longest any step here may take (each takes microseconds): a deadline, not a pause."""


def test_priority_is_earliest_deadline_then_arrival_and_no_deadline_last() -> None:
    keys = {
        "far": priority(T0 + timedelta(minutes=50), 0),
        "none-early": priority(None, 1),
        "near": priority(T0 + timedelta(minutes=5), 2),
        "tie-first": priority(T0 + timedelta(minutes=20), 3),
        "tie-second": priority(T0 + timedelta(minutes=20), 4),
        "none-late": priority(None, 5),
        "naive": priority(datetime(2026, 12, 3, 12, 10), 6),  # taken as UTC: 12:10
        "past": priority(T0 - timedelta(hours=1), 7),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "past", "near", "naive", "tie-first", "tie-second", "far", "none-early", "none-late",
    ]  # fmt: skip


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PriorityGate(0)


class Holders:
    """Tasks that each take a slot of the gate and hold it until told to leave; `order` is the
    order they got their slots in."""

    def __init__(self, gate: PriorityGate) -> None:
        self.gate = gate
        self.order: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, asyncio.Event] = {}
        self._leave: dict[str, asyncio.Event] = {}

    async def arrive(self, name: str, deadline: datetime | None = None) -> None:
        """Start `name`; returns once it holds a slot or waits in the queue."""
        arrived, held, leave = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._held[name], self._leave[name] = held, leave

        async def hold() -> None:
            arrived.set()  # nothing suspends from here to the queue: `arrive` resumes after
            async with self.gate.slot(deadline):
                self.order.append(name)
                held.set()
                await leave.wait()

        self.tasks[name] = asyncio.create_task(hold())
        await asyncio.wait_for(arrived.wait(), WAIT)

    async def held(self, name: str) -> None:
        await asyncio.wait_for(self._held[name].wait(), WAIT)

    async def leave(self, name: str) -> None:
        self._leave[name].set()
        await asyncio.wait_for(self.tasks[name], WAIT)

    async def cancel(self, name: str) -> None:
        self.tasks[name].cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(self.tasks[name], WAIT)


async def test_a_freed_slot_goes_to_the_earliest_deadline_ties_in_arrival_order() -> None:
    holders = Holders(PriorityGate(1))
    await holders.arrive("first", T0 + timedelta(minutes=59))
    await holders.held("first")
    await holders.arrive("far", T0 + timedelta(minutes=50))
    await holders.arrive("unknown")
    await holders.arrive("near", T0 + timedelta(minutes=5))
    await holders.arrive("tie-first", T0 + timedelta(minutes=20))
    await holders.arrive("tie-second", T0 + timedelta(minutes=20))
    assert holders.gate.waiting == 5

    expected = ["near", "tie-first", "tie-second", "far", "unknown"]
    leaving = "first"
    for name in expected:
        await holders.leave(leaving)
        await holders.held(name)
        leaving = name
    await holders.leave(leaving)

    assert holders.order == ["first", *expected]
    assert (holders.gate.free, holders.gate.waiting) == (1, 0)


async def test_no_more_than_slots_hold_at_once() -> None:
    holders = Holders(PriorityGate(2))
    for name in "abcd":
        await holders.arrive(name)
    await holders.held("a")
    await holders.held("b")
    assert holders.order == ["a", "b"]  # c and d arrived, but wait
    assert (holders.gate.free, holders.gate.waiting) == (0, 2)

    await holders.leave("a")
    await holders.held("c")
    assert holders.order == ["a", "b", "c"]
    assert (holders.gate.free, holders.gate.waiting) == (0, 1)

    for name in "bcd":
        await holders.leave(name)
    assert holders.order == ["a", "b", "c", "d"]
    assert (holders.gate.free, holders.gate.waiting) == (2, 0)


async def test_a_newcomer_does_not_take_a_slot_handed_to_a_waiter() -> None:
    holders = Holders(PriorityGate(1))
    await holders.arrive("holder")
    await holders.arrive("waiter", T0 + timedelta(minutes=50))
    await holders.leave("holder")  # the slot is the waiter's from here, even before it runs
    await holders.arrive("newcomer", T0)  # earlier deadline, but the slot is taken

    await holders.held("waiter")
    assert holders.order == ["holder", "waiter"]
    await holders.leave("waiter")
    await holders.held("newcomer")
    await holders.leave("newcomer")
    assert (holders.gate.free, holders.gate.waiting) == (1, 0)


async def test_a_waiter_cancelled_while_waiting_leaves_the_queue() -> None:
    holders = Holders(PriorityGate(1))
    await holders.arrive("holder")
    await holders.arrive("cancelled", T0)
    await holders.arrive("next", T0 + timedelta(minutes=1))
    await holders.cancel("cancelled")
    assert holders.gate.waiting == 1

    await holders.leave("holder")
    await holders.held("next")
    await holders.leave("next")

    assert holders.order == ["holder", "next"]
    assert (holders.gate.free, holders.gate.waiting) == (1, 0)


async def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    gate = PriorityGate(1)
    holders = Holders(gate)
    mine = gate.slot(None)
    await mine.__aenter__()
    await holders.arrive("handed", T0)
    await holders.arrive("next", T0 + timedelta(minutes=1))

    await mine.__aexit__(None, None, None)  # hands the slot to "handed" without suspending
    await holders.cancel("handed")  # cancelled before it could run with its slot

    await holders.held("next")
    await holders.leave("next")
    assert holders.order == ["next"]
    assert (gate.free, gate.waiting) == (1, 0)


async def test_a_holder_cancelled_or_raising_releases_its_slot() -> None:
    holders = Holders(PriorityGate(1))
    await holders.arrive("cancelled")
    await holders.held("cancelled")
    await holders.arrive("next")
    await holders.cancel("cancelled")
    await holders.held("next")  # the cancelled holder's slot went on
    await holders.leave("next")
    assert (holders.gate.free, holders.gate.waiting) == (1, 0)

    async def failing_store() -> None:
        async with holders.gate.slot(T0):
            assert holders.gate.free == 0
            raise RuntimeError("store failed")

    with pytest.raises(RuntimeError, match="store failed"):
        await failing_store()
    assert (holders.gate.free, holders.gate.waiting) == (1, 0)

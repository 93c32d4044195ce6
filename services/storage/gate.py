"""storage's priority gate: at most `slots` stores at once; a freed slot goes to the waiting
store whose deadline (its upstream copy's expiry) is earliest."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

Priority = tuple[bool, datetime, int]
NEVER = datetime.max.replace(tzinfo=UTC)


def priority(deadline: datetime | None, arrival: int) -> Priority:
    """A waiter's place in the queue, smallest first: the earliest deadline, then the earliest
    arrival; a waiter without a deadline after every one with (a naive time is taken as UTC)."""
    if deadline is None:
        return (True, NEVER, arrival)
    return (False, deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC), arrival)


@dataclass(order=True)
class _Waiter:
    key: Priority
    granted: asyncio.Future[None] = field(compare=False)


class PriorityGate:
    """At most `slots` holders at once. A released slot is handed straight to the waiter of
    least `priority` (never to a newcomer while any waits). A waiter cancelled while waiting
    leaves the queue; one cancelled just as it was handed a slot passes the slot on; a holder
    leaving its block (normally, by an error or cancelled) releases its slot."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a gate needs at least one slot, not {slots}")
        self._free = slots
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    @property
    def free(self) -> int:
        return self._free

    @property
    def waiting(self) -> int:
        return sum(not w.granted.done() for w in self._waiting)

    @asynccontextmanager
    async def slot(self, deadline: datetime | None) -> AsyncIterator[bool]:
        """Hold a slot for the block, waiting for one in `deadline` order when none is free;
        the block gets whether it waited (the world may have changed meanwhile)."""
        waited = await self._acquire(deadline)
        try:
            yield waited
        finally:
            self._release()

    async def _acquire(self, deadline: datetime | None) -> bool:
        if self._free > 0:  # a slot is only free while nobody waits: releases hand it over
            self._free -= 1
            return False
        waiter = _Waiter(
            priority(deadline, next(self._arrivals)), asyncio.get_running_loop().create_future()
        )
        heapq.heappush(self._waiting, waiter)
        try:
            await waiter.granted
        except BaseException:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            elif waiter in self._waiting:  # a release may have popped (and skipped) it
                self._waiting.remove(waiter)
                heapq.heapify(self._waiting)
            raise
        return True

    def _release(self) -> None:
        while self._waiting:
            waiter = heapq.heappop(self._waiting)
            if not waiter.granted.done():  # a cancelled one is skipped (and leaves on its own)
                waiter.granted.set_result(None)
                return
        self._free += 1

"""shared.runtime.cached: one opening of a handle however many callers come at once."""

import asyncio

import pytest

from shared.runtime import cached


async def test_callers_at_once_share_one_opening() -> None:
    opened = 0
    entered, release = asyncio.Event(), asyncio.Event()

    async def make() -> str:
        nonlocal opened
        opened += 1
        entered.set()
        await release.wait()
        return "handle"

    get = cached(make)
    callers = [asyncio.ensure_future(get()) for _ in range(16)]
    await entered.wait()  # the opening is under way; the other callers came meanwhile
    release.set()
    assert await asyncio.gather(*callers) == ["handle"] * 16
    assert await get() == "handle"
    assert opened == 1


async def test_a_failed_opening_is_tried_again() -> None:
    answers: list[str | Exception] = [ConnectionError("not yet"), "handle"]

    async def make() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    get = cached(make)
    with pytest.raises(ConnectionError):
        await get()
    assert await get() == "handle"
    assert answers == []

"""shared.messaging.periodically: the heartbeat/lease loop ends with its block, whatever the
action does with the cancellation."""

import asyncio

from shared.messaging import periodically


async def test_the_loop_ends_even_when_the_action_turns_cancellation_into_an_error() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()  # set once the check is done: lets a loop that ran on stop
    calls = 0

    async def action() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                # What nats-py does in places: a cancelled wait becomes an ordinary exception.
                raise RuntimeError("cancellation swallowed") from None
        await release.wait()  # only a loop that ignored the end of its block gets here
        raise asyncio.CancelledError

    async def block() -> None:
        async with periodically(0.01, action):
            await asyncio.wait_for(entered.wait(), 5)

    task = asyncio.create_task(block())
    done, _ = await asyncio.wait({task}, timeout=5)  # not wait_for: a hung exit eats its cancel
    release.set()
    await task
    assert task in done, "the block's exit waited for a loop that never ended"
    assert calls == 1


async def test_the_action_runs_every_period_while_the_block_runs() -> None:
    ran = asyncio.Event()
    calls = 0

    async def action() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            ran.set()

    async with periodically(0.01, action):
        await asyncio.wait_for(ran.wait(), 5)
    after = calls
    await asyncio.sleep(0.05)  # long enough for several periods: none may run any more
    assert calls == after

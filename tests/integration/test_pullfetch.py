"""Pull fetches (shared/pullfetch.py) against a real nats-server: one message is waited for, the
rest of a batch only taken when ready, in one more pull request; an empty fetch times out with
the error FastStream's pull loop expects."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from shared import pullfetch


@pytest.fixture
async def pull(
    nc: Client,
) -> AsyncIterator[tuple[JetStreamContext.PullSubscription, str, list[str]]]:
    """A fresh stream and pull consumer; the pull requests the consumer gets are recorded."""
    pullfetch.install()
    name = f"PF{uuid.uuid4().hex[:8]}"
    subject = f"pf.{name}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{subject}.>"]))
    requests: list[str] = []

    async def seen(msg: Msg) -> None:
        requests.append(msg.data.decode())

    watch = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{name}.>", cb=seen)
    sub = await js.pull_subscribe(
        f"{subject}.>", durable="d", stream=name,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )  # fmt: skip
    try:
        yield sub, subject, requests
    finally:
        await watch.unsubscribe()
        await sub.unsubscribe()
        await js.delete_stream(name)


async def test_ready_messages_come_a_batch_per_pull_request(
    nc: Client, pull: tuple[JetStreamContext.PullSubscription, str, list[str]]
) -> None:
    sub, subject, requests = pull
    js = nc.jetstream()
    for n in range(20):
        await js.publish(f"{subject}.{n}", str(n).encode())
    got: list[Msg] = []
    while len(got) < 16:
        fetched = await sub.fetch(batch=8, timeout=5)
        assert 1 <= len(fetched) <= 8
        got += fetched
    assert [m.data for m in got] == [str(n).encode() for n in range(16)]
    await nc.flush()
    assert len(requests) == 2, requests  # one per batch of eight, not one per message
    for m in got:
        await m.ack()


async def test_messages_that_trickle_in_share_one_pull_request(
    nc: Client, pull: tuple[JetStreamContext.PullSubscription, str, list[str]]
) -> None:
    sub, subject, requests = pull
    js = nc.jetstream()
    for n in range(5):
        fetching = asyncio.create_task(sub.fetch(batch=8, timeout=5))
        await js.publish(f"{subject}.{n}", str(n).encode())
        got = await asyncio.wait_for(fetching, 10)
        assert [m.data for m in got] == [str(n).encode()]
        await got[0].ack()
    await nc.flush()
    assert len(requests) == 1, requests  # the first request, still open, brought all five


async def test_a_lone_message_is_not_held_for_the_batch_to_fill(
    nc: Client, pull: tuple[JetStreamContext.PullSubscription, str, list[str]]
) -> None:
    sub, subject, _ = pull
    js = nc.jetstream()
    fetching = asyncio.create_task(sub.fetch(batch=8, timeout=30))
    started = time.monotonic()
    await js.publish(f"{subject}.one", b"one")
    got = await asyncio.wait_for(fetching, 20)
    assert [m.data for m in got] == [b"one"]
    assert time.monotonic() - started < 10  # returned with one, far before the 30 s timeout
    await got[0].ack()


async def test_an_empty_fetch_raises_the_nats_timeout(
    pull: tuple[JetStreamContext.PullSubscription, str, list[str]],
) -> None:
    sub, _, _ = pull
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(batch=8, timeout=0.5)


async def test_an_idle_consumer_asks_once_per_request_lifetime(
    nc: Client,
    pull: tuple[JetStreamContext.PullSubscription, str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Empty fetches in a row reuse the open request; a new one goes out only after the
    server's 408 says the last one expired."""
    monkeypatch.setattr(pullfetch, "REQUEST_SECONDS", 0.5)
    sub, subject, requests = pull
    started = time.monotonic()
    empty = 0
    while time.monotonic() - started < 1.6:
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(batch=8, timeout=0.1)
        empty += 1
    await nc.flush()
    assert empty >= 10
    assert 3 <= len(requests) <= 5, requests  # one per 0.5 s lifetime, not one per fetch
    await nc.jetstream().publish(f"{subject}.late", b"late")
    got = await sub.fetch(batch=8, timeout=5)
    assert [m.data for m in got] == [b"late"]

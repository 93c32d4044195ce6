"""Webhook ids in the real clipline_webhooks bucket: one claim wins among many, a released id
can be claimed again, the bucket forgets after its ttl (longer than the tolerance)."""

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from services.poller.adapters import CLAIM_STALE_SECONDS, KvSeenWebhooks
from shared.streams import WEBHOOK_REPLAY_WINDOW_SECONDS, WEBHOOKS_BUCKET

pytestmark = pytest.mark.integration


async def seen(nc: Client, clock: Callable[[], float] = time.time) -> KvSeenWebhooks:
    kv = await nc.jetstream().key_value(WEBHOOKS_BUCKET)

    async def get_kv() -> KeyValue:
        return kv

    return KvSeenWebhooks(get_kv, clock=clock)


async def test_of_concurrent_claims_of_one_id_exactly_one_wins(nc: Client) -> None:
    # Two KvSeenWebhooks on one connection stand for replicas: only the server decides.
    a, b = await seen(nc), await seen(nc)
    webhook_id = f"msg_{uuid.uuid4().hex}"
    wins = await asyncio.gather(*(s.claim(webhook_id) for s in [a, b] * 10))
    assert wins.count(True) == 1
    assert await a.claim(f"msg_{uuid.uuid4().hex}")  # another id is its own


async def test_a_released_id_is_taken_again_once(nc: Client) -> None:
    store = await seen(nc)
    webhook_id = "any id: spaces, dots. and *wildcards* > are fine " + uuid.uuid4().hex
    assert await store.claim(webhook_id)
    await store.release(webhook_id)
    assert await store.claim(webhook_id)
    assert not await store.claim(webhook_id)


async def test_the_bucket_remembers_longer_than_the_tolerance(nc: Client) -> None:
    status = await (await nc.jetstream().key_value(WEBHOOKS_BUCKET)).status()
    assert status.ttl == WEBHOOK_REPLAY_WINDOW_SECONDS > 5 * 60


async def test_a_claim_whose_taker_died_is_taken_over_once_stale_but_a_done_one_never(
    nc: Client,
) -> None:
    now = [time.time()]
    dead, retry = await seen(nc, lambda: now[0]), await seen(nc, lambda: now[0])
    webhook_id = f"msg_{uuid.uuid4().hex}"
    assert await dead.claim(webhook_id)  # ... and its process is SIGKILLed mid-look
    assert not await retry.claim(webhook_id)  # the sender's retry while it might still run
    now[0] += CLAIM_STALE_SECONDS + 1
    takers = await asyncio.gather(*(retry.claim(webhook_id) for _ in range(5)))
    assert takers.count(True) == 1  # a later retry takes it over, once
    await retry.done(webhook_id)
    now[0] += 3600
    assert not await retry.claim(webhook_id)  # handled: a replay, however late


async def test_a_video_told_of_early_is_remembered(nc: Client) -> None:
    store = await seen(nc)
    video = f"video_{uuid.uuid4().hex}"
    assert not await store.told(video)
    await store.tell(video)
    assert await store.told(video)
    assert not await store.told(video + "x")


async def test_a_slow_takers_release_leaves_the_claim_that_took_it_over(nc: Client) -> None:
    now = [time.time()]
    slow, retry, third = [await seen(nc, lambda: now[0]) for _ in range(3)]
    webhook_id = f"msg_{uuid.uuid4().hex}"
    assert await slow.claim(webhook_id)
    now[0] += CLAIM_STALE_SECONDS + 1
    assert await retry.claim(webhook_id)  # taken over: the first look was slow, not dead
    await slow.release(webhook_id)  # its look then failed: it forgets only its own claim
    assert not await third.claim(webhook_id)  # the retry's claim stands


async def test_a_renewed_claim_is_not_taken_over(nc: Client) -> None:
    now = [time.time()]
    alive, retry = await seen(nc, lambda: now[0]), await seen(nc, lambda: now[0])
    webhook_id = f"msg_{uuid.uuid4().hex}"
    assert await alive.claim(webhook_id)
    now[0] += CLAIM_STALE_SECONDS - 2
    await alive.renew(webhook_id)  # a slow look, still running
    now[0] += CLAIM_STALE_SECONDS - 2
    assert not await retry.claim(webhook_id)  # long since the claim, not since its renewal
    now[0] += 3
    assert await retry.claim(webhook_id)  # no renewal for longer: its taker died
    await alive.renew(webhook_id)  # a late renewal of the lost claim changes nothing
    assert not await (await seen(nc, lambda: now[0] + 1)).claim(webhook_id)

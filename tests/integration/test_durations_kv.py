"""Generation times learned in the real clipline_durations bucket: shared by replicas, every
concurrent sample kept (compare-and-set), the registry's guess until enough jobs finished, a
broken value starts afresh instead of stopping the poller."""

import asyncio
import uuid

import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from services.poller.adapters import KvExpectations
from services.poller.schedule import MIN_SAMPLES, STAMP_SLACK
from shared.contracts import JobSpec
from shared.registry import load_registry
from shared.streams import DURATIONS_BUCKET

pytestmark = pytest.mark.integration
OPENAI = load_registry().provider("openai")


async def replica(nc: Client, *, ttl: float = 30.0) -> KvExpectations:
    kv = await nc.jetstream().key_value(DURATIONS_BUCKET)

    async def get_kv() -> KeyValue:
        return kv

    return KvExpectations(get_kv, OPENAI, ttl=ttl)


def kind() -> JobSpec:
    """A kind of job no other test learned about (a prompt of its own does not make one: the
    kind is model, size and seconds; a fresh seconds value does, as the registry is not asked)."""
    return JobSpec(model="sora-2", size=f"{uuid.uuid4().hex[:6]}x1", seconds=8, prompt="p")


async def test_the_registry_guesses_until_enough_jobs_finished_then_all_replicas_know(
    nc: Client,
) -> None:
    a, b = await replica(nc), await replica(nc, ttl=0.0)
    spec = kind()
    assert await a.expected(spec) == 30 + 8 * 8  # openai's default_generation for 8 s
    for took in range(MIN_SAMPLES):
        await a.finished(spec, f"video_{took}", 100.0 + took)
    assert await a.expected(spec) == 102.0 + STAMP_SLACK
    assert await b.expected(spec) == 102.0 + STAMP_SLACK  # learned by another replica
    alias = spec.model_copy(update={"model": "sora-2-2025-10-06"})
    assert await b.expected(alias) == 102.0 + STAMP_SLACK  # an alias is the same model


async def test_concurrent_samples_are_all_kept(nc: Client) -> None:
    replicas = [await replica(nc, ttl=0.0) for _ in range(4)]
    spec = kind()
    await asyncio.gather(
        *(r.finished(spec, f"video_{i}", 10.0 * (i + 1)) for i, r in enumerate(replicas * 3))
    )
    await asyncio.gather(*(r.flush() for r in replicas))  # what each had not written yet
    entry = await (await nc.jetstream().key_value(DURATIONS_BUCKET)).get(replicas[0]._key(spec))
    assert entry.value is not None
    assert entry.value.count(b".0") == 12  # every one of the 12 samples


async def test_samples_past_the_first_are_written_in_batches_not_per_job(nc: Client) -> None:
    now = [0.0]
    kv = await nc.jetstream().key_value(DURATIONS_BUCKET)

    async def get_kv() -> KeyValue:
        return kv

    a = KvExpectations(get_kv, OPENAI, ttl=0.0, flush_every=10.0, clock=lambda: now[0])
    spec = kind()
    key = a._key(spec)
    for n in range(MIN_SAMPLES):  # learning: each one written at once
        await a.finished(spec, f"video_{n}", 10.0)
    written = (await kv.get(key)).revision
    assert written is not None
    for n in range(20):  # then: kept in the replica until the flush is due
        await a.finished(spec, f"video_more_{n}", 20.0)
    assert (await kv.get(key)).revision == written
    assert await a.expected(spec) == 20.0 + STAMP_SLACK  # this replica knows them already
    now[0] = 10.0
    await a.finished(spec, "video_last", 20.0)  # due: all 21 in one write
    entry = await kv.get(key)
    assert entry.revision == written + 1
    assert entry.value is not None
    assert entry.value.count(b"video_more_") == 20


async def test_a_broken_value_is_a_fresh_start(nc: Client) -> None:
    expectations = await replica(nc, ttl=0.0)
    spec = kind()
    kv = await nc.jetstream().key_value(DURATIONS_BUCKET)
    await kv.put(expectations._key(spec), b"{not json")
    assert await expectations.expected(spec) == 94.0
    await expectations.finished(spec, "video_x", 50.0)  # and learning goes on over it
    assert await expectations.expected(spec) == 94.0  # one sample: still the guess


async def test_a_video_seen_ending_twice_counts_once(nc: Client) -> None:
    a, b = await replica(nc, ttl=0.0), await replica(nc, ttl=0.0)
    spec = kind()
    for took in (10.0, 10.0, 10.0):  # a webhook and two polls of one video, on two replicas
        await a.finished(spec, "video_once", took)
        await b.finished(spec, "video_once", took)
    await a.finished(spec, "video_two", 20.0)
    assert await a.expected(spec) == 94.0  # two videos: still the registry's guess

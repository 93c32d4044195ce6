"""The submitter under a shared rate limit (in-memory shaper on the real decisions): work above
the limit waits in the stream, slots are given back, a 429 slows everyone, priority counts."""

from __future__ import annotations

import pytest

from services.submitter.app import build_router
from services.submitter.ports import Deps
from services.submitter.rates import Limits
from shared.contracts import JobSpec, JobStatus
from shared.provider import ProviderRateLimited
from tests.component.harness import admitted, job_record, new_job_id, running
from tests.component.support import actions, settled
from tests.fakes import FakeProvider, InMemoryRates, upstream_video

SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p", priority="low")


async def test_above_the_limit_a_job_waits_in_the_stream_and_creates_nothing() -> None:
    # One slot every ~10 s (beyond the 10 s horizon), no burst: the second job is sent back.
    rates = InMemoryRates(Limits(rpm=6, concurrency=10, burst_seconds=1))
    provider = FakeProvider(creates=[upstream_video("video_1")])
    deps = lambda f: Deps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0, rates)  # noqa: E731
    async with running(build_router(3), deps) as h:
        first, second = new_job_id(), new_job_id()
        for job_id in (first, second):
            h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=SPEC, cost_micros=400_000))
        await h.send(admitted(first, SPEC))
        await h.send(admitted(second, SPEC))

        assert [c.client_request_id for c in provider.created] == [first]
        ((action, delay),) = settled(h.outcomes(admitted(second, SPEC)))
        assert action == "nak"
        assert delay is not None
        assert 0.1 <= delay <= 10.3  # back at its own turn, before its slot at ~10.1 s
        waiting = h.jobs.records()[second]
        assert (waiting.status, waiting.submit_attempts, waiting.errors) == (
            JobStatus.ADMITTED, 0, {}
        )  # fmt: skip
        assert rates.asked == [("sora-2", first, "low"), ("sora-2", second, "low")]
        assert rates.released == [first]  # the slot came back once the create was answered


async def test_a_429_slows_every_replica_and_gives_the_slot_back() -> None:
    rates = InMemoryRates(Limits(rpm=600, concurrency=10))
    provider = FakeProvider(creates=[ProviderRateLimited("slow", retry_after_seconds=5.0)])
    deps = lambda f: Deps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0, rates)  # noqa: E731
    async with running(build_router(3), deps) as h:
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=SPEC, cost_micros=400_000))
        event = admitted(job_id, SPEC)
        await h.send(event)

        assert actions(h.outcomes(event)) == ["nak"]
        assert rates.throttled == [5.0]
        assert rates.released == [job_id]
        assert rates.states["sora-2"].blocked_until == rates.now + 5.0


@pytest.mark.parametrize("alias", ["sora-2-2025-10-06"])
async def test_the_model_named_is_what_the_shaper_gets(alias: str) -> None:
    rates = InMemoryRates(Limits(rpm=600, concurrency=10))
    provider = FakeProvider(creates=[upstream_video("video_2")])
    spec = JobSpec(model=alias, size="1280x720", seconds=4, prompt="p")
    deps = lambda f: Deps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0, rates)  # noqa: E731
    async with running(build_router(3), deps) as h:
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=spec, cost_micros=400_000))
        await h.send(admitted(job_id, spec))
    assert rates.asked == [(alias, job_id, "normal")]  # KvRates maps an alias to its model


async def test_a_second_delivery_leaves_the_slot_to_the_delivery_that_took_it() -> None:
    rates = InMemoryRates(Limits(rpm=600, concurrency=10))
    provider = FakeProvider(creates=[upstream_video("video_3")])
    deps = lambda f: Deps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0, rates)  # noqa: E731
    async with running(build_router(3), deps) as h:
        job_id = new_job_id()
        await rates.acquire("sora-2", job_id, "normal", 300.0)  # the first delivery's slot
        h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=SPEC, cost_micros=400_000))
        await h.send(admitted(job_id, SPEC), delivery=2)
    assert rates.released == []  # not this delivery's to give back
    assert [s[0] for s in rates.states["sora-2"].inflight] == [job_id]

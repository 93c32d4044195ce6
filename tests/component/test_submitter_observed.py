"""The submitter's rate-limit waits observed (issue 20): a create held back by the shaping, or
by an upstream 429, counted by cause with how long it waits."""

from __future__ import annotations

import uuid

import pytest

from services.submitter.app import build_router
from services.submitter.ports import Deps
from services.submitter.rates import Limits
from shared.contracts import JobSpec, JobStatus
from shared.provider import ProviderRateLimited
from tests.component.harness import admitted, job_record, new_job_id, running
from tests.component.support import settled
from tests.fakes import FakeProvider, InMemoryRates, upstream_video
from tests.otel_probe import histogram_sum, metric_reader, reading

SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p", priority="low")


@pytest.fixture(autouse=True)
def _metrics() -> None:
    metric_reader()


def waits(name: str, cause: str) -> dict[str, str]:
    return {"provider": name, "model": "sora-2", "cause": cause}


async def test_a_create_above_the_shaped_rate_is_a_shaping_wait() -> None:
    name = f"p{uuid.uuid4().hex[:8]}"
    rates = InMemoryRates(Limits(rpm=6, concurrency=10, burst_seconds=1))
    provider = FakeProvider(creates=[upstream_video("video_1")])
    deps = lambda f: Deps(  # noqa: E731
        f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0, rates, provider_name=name
    )
    async with running(build_router(3), deps) as h:
        first, second = new_job_id(), new_job_id()
        for job_id in (first, second):
            h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=SPEC, cost_micros=400_000))
        await h.send(admitted(first, SPEC))
        await h.send(admitted(second, SPEC))
        ((_, delay),) = settled(h.outcomes(admitted(second, SPEC)))

    assert reading("clipline.rate_limit.waits", waits(name, "shaping")) == 1
    assert histogram_sum("clipline.rate_limit.wait", waits(name, "shaping")) == delay
    assert reading("clipline.rate_limit.waits", waits(name, "upstream_429")) == 0


async def test_a_create_answered_429_is_an_upstream_429_wait() -> None:
    name = f"p{uuid.uuid4().hex[:8]}"
    rates = InMemoryRates(Limits(rpm=600, concurrency=10))
    provider = FakeProvider(creates=[ProviderRateLimited("slow", retry_after_seconds=5.0)])
    deps = lambda f: Deps(  # noqa: E731
        f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0, rates, provider_name=name
    )
    async with running(build_router(3), deps) as h:
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=SPEC, cost_micros=400_000))
        event = admitted(job_id, SPEC)
        await h.send(event)
        ((_, delay),) = settled(h.outcomes(event))

    assert reading("clipline.rate_limit.waits", waits(name, "upstream_429")) == 1
    assert histogram_sum("clipline.rate_limit.wait", waits(name, "upstream_429")) == delay

"""Every stage acts from the record: an event about no job, or whose facts are not the record's,
is acked, logged once at WARNING, and changes nothing (no reservation, create, look, store)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from services.poller.app import build_router as build_poller
from services.poller.domain import PollPolicy
from services.poller.ports import Deps as PollerDeps
from services.pricing_guard.adapters import KvBudgets
from services.storage.app import build_router as build_storage
from services.storage.ports import Deps as StorageDeps
from services.submitter.app import build_router as build_submitter
from services.submitter.ports import Deps as SubmitterDeps
from shared.contracts import (
    JobCompletedV1,
    JobGeneratedV1,
    JobSpec,
    JobStatus,
    JobSubmittedV1,
    JobTimings,
)
from shared.contracts.events import Event
from tests.component.harness import (
    SPEC,
    TENANT,
    Fakes,
    Harness,
    accepted,
    admitted,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.component.support import actions, settled
from tests.fakes import FakeProvider, InMemoryAssetStore

OTHER = JobSpec(model="sora-2-pro", size="1280x720", seconds=8, prompt="another prompt")
VIDEO = "video_mine"


def warnings_about(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and job_id in r.getMessage()
    ]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> bool:
    return not any(r.exc_info for r in caplog.records)


async def ignored(h: Harness, event: Event, caplog: pytest.LogCaptureFixture) -> str:
    """Deliver `event`; it must be acked with nothing published; its one WARNING line."""
    before = h.jobs.records().get(event.job_id)
    await h.send(event)
    assert actions(h.outcomes(event)) == ["ack"]
    assert h.bus.kinds() == [event.kind]  # only the forgery itself: nothing emitted
    assert h.jobs.records().get(event.job_id) == before
    assert no_tracebacks(caplog)
    (line,) = warnings_about(caplog, event.job_id)
    assert f"ignored {event.kind} of job {event.job_id}" in line
    return line


# -- pricing_guard ------------------------------------------------------------------------------


async def test_an_accepted_for_no_job_reserves_nothing(
    guard: Harness, budgets: KvBudgets, caplog: pytest.LogCaptureFixture
) -> None:
    ghost = new_job_id()
    line = await ignored(guard, accepted(ghost), caplog)

    assert "no record" in line
    assert await budgets.reservation(TENANT, ghost) is None
    assert await budgets.open_jobs() == []


async def test_an_accepted_whose_spec_is_not_the_records_is_not_priced(
    guard: Harness, budgets: KvBudgets, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    line = await ignored(guard, accepted(job_id, OTHER), caplog)

    assert "spec" in line
    assert await budgets.reservation(TENANT, job_id) is None


def completed(job_id: str) -> JobCompletedV1:
    now = datetime.now(UTC)
    return JobCompletedV1(
        event_id=new_event_id(), occurred_at=now, job_id=job_id, tenant=TENANT,
        upstream_id=VIDEO, assets=[], cost_micros=400_000,
        timings=JobTimings(accepted_at=now, completed_at=now, total_seconds=1.0),
    )  # fmt: skip


async def test_a_completed_the_record_does_not_bear_out_settles_nothing_and_counts_nothing(
    guard: Harness, budgets: KvBudgets
) -> None:
    """A forged end of a running job: looked at again later (no error counted on the record,
    which stays as it was), its reservation left reserved."""
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    await guard.send(accepted(job_id))
    running_job = guard.jobs.records()[job_id].model_copy(
        update={"status": JobStatus.SUBMITTED, "upstream_id": VIDEO}
    )
    guard.jobs.put(running_job)
    forged = completed(job_id)
    await guard.send(forged)

    assert settled(guard.outcomes(forged)) == [("nak", 10.0)]
    assert guard.jobs.records()[job_id] == running_job  # no error counted, no charge
    reservation = await budgets.reservation(TENANT, job_id)
    assert reservation is not None
    assert reservation.state == "reserved"


async def test_a_completed_for_no_job_is_acked_and_logged(
    guard: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    line = await ignored(guard, completed(new_job_id()), caplog)
    assert "no record" in line


# -- submitter ----------------------------------------------------------------------------------


@asynccontextmanager
async def submitter() -> AsyncIterator[tuple[Harness, FakeProvider]]:
    provider = FakeProvider()

    def deps(f: Fakes) -> SubmitterDeps:
        return SubmitterDeps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0)

    async with running(build_submitter(3), deps) as h:
        yield h, provider


async def test_an_admitted_with_another_spec_creates_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with submitter() as (h, provider):
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.ADMITTED))
        line = await ignored(h, admitted(job_id, OTHER, cost=2_400_000), caplog)

    assert provider.created == []
    assert "spec" in line
    assert "cost_micros" in line


async def test_an_admitted_for_no_job_creates_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with submitter() as (h, provider):
        await ignored(h, admitted(new_job_id()), caplog)
    assert provider.created == []


async def test_the_create_is_the_records_spec() -> None:
    """A faithful `admitted` wakes the submitter; what it creates is read from the record."""
    async with submitter() as (h, provider):
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.ADMITTED))
        await h.send(admitted(job_id))

    (request,) = provider.created
    assert (request.model, request.size, request.seconds, request.prompt) == (
        SPEC.model, SPEC.size, SPEC.seconds, SPEC.prompt,
    )  # fmt: skip


# -- poller -------------------------------------------------------------------------------------


def submitted(job_id: str, upstream_id: str) -> JobSubmittedV1:
    return JobSubmittedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        spec=SPEC, cost_micros=400_000, upstream_id=upstream_id,
    )  # fmt: skip


async def test_a_submitted_naming_another_video_is_never_looked_at(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = FakeProvider()
    policy = PollPolicy(default_delay=1.0, min_delay=0.1, max_delay=5.0, deadline=60.0)
    deps = lambda f: PollerDeps(f.jobs, f.emit, provider, policy)  # noqa: E731
    async with running(build_poller(), deps) as h:
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id=VIDEO))
        line = await ignored(h, submitted(job_id, "video_someone_elses"), caplog)

    assert provider.retrieved == []
    assert "upstream_id" in line


# -- storage ------------------------------------------------------------------------------------


def generated(job_id: str, upstream_id: str = VIDEO, cost: int = 400_000) -> JobGeneratedV1:
    return JobGeneratedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        upstream_id=upstream_id, cost_micros=cost,
    )  # fmt: skip


@asynccontextmanager
async def storage() -> AsyncIterator[tuple[Harness, FakeProvider, InMemoryAssetStore]]:
    provider, store = FakeProvider(), InMemoryAssetStore()
    deps = lambda f: StorageDeps(f.jobs, f.emit, provider, store)  # noqa: E731
    async with running(build_storage(3), deps) as h:
        yield h, provider, store


@pytest.mark.parametrize(
    ("upstream_id", "cost", "what"),
    [("video_someone_elses", 400_000, "upstream_id"), (VIDEO, 1, "cost_micros")],
)
async def test_a_generated_that_disagrees_stores_nothing(
    caplog: pytest.LogCaptureFixture, upstream_id: str, cost: int, what: str
) -> None:
    async with storage() as (h, provider, store):
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO))
        line = await ignored(h, generated(job_id, upstream_id, cost), caplog)

    assert provider.downloaded == []
    assert store.objects == {}
    assert what in line


async def test_a_generated_for_a_job_still_running_stores_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its facts agree, but the record says the upstream has not finished: forged."""
    async with storage() as (h, provider, store):
        job_id = new_job_id()
        h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id=VIDEO))
        line = await ignored(h, generated(job_id), caplog)

    assert provider.downloaded == []
    assert store.objects == {}
    assert "status (submitted)" in line


async def test_a_generated_for_no_job_stores_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with storage() as (h, provider, _):
        await ignored(h, generated(new_job_id()), caplog)
    assert provider.downloaded == []

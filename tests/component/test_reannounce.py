"""A job ended by a stage whose announcement was lost (a crash between the record and the
event) is announced again on redelivery, from its record; other stages' outcomes are not."""

from __future__ import annotations

from datetime import UTC, datetime

from services.poller.app import build_router as poller_router
from services.poller.domain import PollPolicy
from services.poller.ports import Deps as PollerDeps
from services.submitter.app import build_router as submitter_router
from services.submitter.ports import Deps as SubmitterDeps
from shared.contracts import (
    JobFailedV1,
    JobStatus,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.ids import fact_event_id
from tests.component.harness import (
    SPEC,
    TENANT,
    admitted,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.fakes import FakeProvider

POLICY = PollPolicy(default_delay=1.0, min_delay=0.1, max_delay=5.0, deadline=60.0)


async def test_submitter_announces_its_lost_failure_again() -> None:
    provider = FakeProvider()
    router = submitter_router(3)
    deps = lambda f: SubmitterDeps(f.jobs, f.inputs, f.upstream, provider, f.emit, 60.0)  # noqa: E731
    async with running(router, deps) as h:
        job_id = new_job_id()
        h.jobs.put(
            job_record(
                job_id,
                JobStatus.FAILED,
                reason="upstream_rejected",
                detail="400: bad size",
                stage="submitter",
            )
        )
        event = admitted(job_id)
        await h.send(event, delivery=2)
        failed = h.bus.one(JobFailedV1)
        assert (failed.reason, failed.detail, failed.stage) == (
            "upstream_rejected", "400: bad size", "submitter"
        )  # fmt: skip
        assert failed.event_id == fact_event_id(job_id, "failed")
        assert provider.created == []


async def test_poller_announces_its_lost_time_out_but_not_another_stages_end() -> None:
    provider = FakeProvider()
    async with running(
        poller_router(), lambda f: PollerDeps(f.jobs, f.emit, provider, POLICY)
    ) as h:
        mine, theirs = new_job_id(), new_job_id()
        h.jobs.put(
            job_record(
                mine,
                JobStatus.TIMED_OUT,
                reason="upstream_timeout",
                detail="late",
                stage="poller",
                upstream_id="video_1",
            )
        )
        h.jobs.put(
            job_record(
                theirs, JobStatus.FAILED, reason="x", detail="y", stage="storage",
                upstream_id="video_1",
            )
        )  # fmt: skip
        for job_id in (mine, theirs):
            await h.send(
                JobSubmittedV1(
                    event_id=new_event_id(),
                    occurred_at=datetime.now(UTC),
                    job_id=job_id,
                    tenant=TENANT,
                    spec=SPEC,
                    cost_micros=400_000,
                    upstream_id="video_1",
                )
            )
        timed_out = h.bus.one(JobTimedOutV1)
        assert timed_out.job_id == mine
        assert timed_out.upstream_id == "video_1"
        assert h.bus.events(JobFailedV1) == []  # storage's outcome is storage's to announce
        assert provider.retrieved == []

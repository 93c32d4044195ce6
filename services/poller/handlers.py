"""poller handlers: follow submitted jobs with durable timers (delayed naks) to the end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from faststream import Context
from faststream.exceptions import NackMessage

from services.poller.domain import Failed, Generated, Pending, TimedOut, assess, overdue
from services.poller.ports import Deps
from shared.contracts import (
    JobGeneratedV1,
    JobProgressV1,
    JobRecordV1,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.lifecycle import JobStatus, mark_generated, report_progress
from shared.jobstore import advance
from shared.messaging import ServiceRouter, announce_end, end_job
from shared.provider import ProviderNotFound, ProviderRateLimited, ProviderRejected

SERVICE = "poller"
MAX_ERRORS = 60  # upstream errors (5xx, timeouts) over a job's whole follow-up before it fails


def build_router() -> ServiceRouter:
    router = ServiceRouter(SERVICE, emits=[JobProgressV1, JobGeneratedV1, JobTimedOutV1])

    @router.on(JobSubmittedV1, max_errors=MAX_ERRORS, max_workers=32)
    async def on_job_submitted(
        event: JobSubmittedV1, deps: Annotated[Deps, Context("deps")]
    ) -> None:
        record = await deps.jobs.get(event.tenant, event.job_id)
        if record is not None and record.terminal:
            await announce_end(deps.emit, record, SERVICE)  # its event may have been lost
            return
        if record is None or record.status not in (JobStatus.SUBMITTED, JobStatus.GENERATING):
            if record is not None and record.status == JobStatus.GENERATED:
                await deps.emit(generated(event))  # redelivered after a crash: announce again
            return
        waited = waited_since_submit(record)
        if (late := overdue(deps.policy, waited)) is not None:
            await end(deps, event, late)  # checked first: no upstream trouble extends a job

            return
        try:
            video, hint = await deps.provider.retrieve(event.upstream_id)
        except ProviderNotFound as exc:
            await end(deps, event, Failed("upstream_lost", exc.message))
            return
        except ProviderRejected as exc:
            await end(deps, event, Failed("upstream_rejected", f"{exc.status}: {exc.message}"))
            return
        except ProviderRateLimited as exc:
            raise NackMessage(delay=deps.policy.clamp(exc.retry_after_seconds)) from exc
        # Other upstream errors (5xx, timeouts, malformed bodies) propagate: the house delivery
        # policy counts them against MAX_ERRORS and retries with backoff.
        error = (video.error.code, video.error.message) if video.error else None
        decision = assess(
            deps.policy, status=video.status, progress=video.progress, error=error,
            waited=waited, server_hint=hint,
        )  # fmt: skip
        match decision:
            case Pending(progress=progress, delay=delay):
                await progressed(deps, event, record, video.status, progress)
                raise NackMessage(delay=delay)
            case Generated():
                if await advance(deps.jobs, event, mark_generated):
                    await deps.emit(generated(event))
            case Failed() | TimedOut():
                await end(deps, event, decision)

    return router


async def end(deps: Deps, event: JobSubmittedV1, why: Failed | TimedOut) -> None:
    await end_job(
        deps.jobs, deps.emit, event, reason=why.reason, detail=why.detail, stage=SERVICE,
        upstream_id=event.upstream_id, how="time_out" if isinstance(why, TimedOut) else "fail",
    )  # fmt: skip


def waited_since_submit(record: JobRecordV1) -> float:
    submitted_at = record.history.get(JobStatus.SUBMITTED.value)
    if submitted_at is None:
        return 0.0
    return (datetime.now(UTC) - submitted_at).total_seconds()


async def progressed(
    deps: Deps, event: JobSubmittedV1, record: JobRecordV1, status: str, progress: int
) -> None:
    """Progress is announced only when it moved forward (one fact per percentage)."""
    if record.status == JobStatus.GENERATING and progress <= record.progress:
        return
    if await advance(deps.jobs, event, report_progress, progress=progress):
        fact = JobProgressV1.fact(
            event, key=str(progress), upstream_id=event.upstream_id,
            upstream_status=status, progress=progress,
        )  # fmt: skip
        await deps.emit(fact)


def generated(event: JobSubmittedV1) -> JobGeneratedV1:
    return JobGeneratedV1.fact(event, upstream_id=event.upstream_id, cost_micros=event.cost_micros)

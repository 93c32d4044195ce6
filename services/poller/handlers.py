"""poller handlers: follow submitted jobs with durable timers (delayed naks) to the end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from faststream import Context
from faststream.exceptions import NackMessage

from services.poller.domain import Failed, Generated, Pending, PollPolicy, TimedOut, assess, overdue
from shared.contracts import (
    JobGeneratedV1,
    JobProgressV1,
    JobRecordV1,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.lifecycle import JobStatus, mark_generated, report_progress
from shared.jobstore import JobStore, advance
from shared.messaging import ServiceRouter
from shared.outcomes import Emit, announce_end, end_job
from shared.provider import (
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    VideoProvider,
)

SERVICE = "poller"
MAX_ERRORS = 60  # upstream errors (5xx, timeouts) over a job's whole follow-up before it fails
FOLLOWED = (JobStatus.SUBMITTED, JobStatus.GENERATING)
Jobs = Annotated[JobStore, Context("deps.jobs")]
Emitter = Annotated[Emit, Context("deps.emit")]
Provider = Annotated[VideoProvider, Context("deps.provider")]
Policy = Annotated[PollPolicy, Context("deps.policy")]


def build_router() -> ServiceRouter:
    router = ServiceRouter(SERVICE, emits=[JobProgressV1, JobGeneratedV1, JobTimedOutV1])

    @router.on(JobSubmittedV1, max_errors=MAX_ERRORS, max_workers=32)
    async def on_job_submitted(
        event: JobSubmittedV1, jobs: Jobs, emit: Emitter, provider: Provider, policy: Policy
    ) -> None:
        record = await jobs.get(event.tenant, event.job_id)
        if record is None or record.status not in FOLLOWED:
            await not_followed(emit, event, record)
            return
        match await look(provider, policy, event, waited_since_submit(record)):
            case Pending() as pending:
                await progressed(jobs, emit, event, record, pending)
                raise NackMessage(delay=pending.delay)  # the durable timer of the next poll
            case Generated(produced_seconds=produced):
                if await advance(jobs, event, mark_generated, produced_seconds=produced):
                    await emit(generated(event, produced))
            case Failed() | TimedOut() as why:
                await end_job(
                    jobs, emit, event, reason=why.reason, detail=why.detail, stage=SERVICE,
                    upstream_id=event.upstream_id,
                    how="time_out" if isinstance(why, TimedOut) else "fail",
                )  # fmt: skip

    return router


async def look(
    provider: VideoProvider, policy: PollPolicy, event: JobSubmittedV1, waited: float
) -> Pending | Generated | Failed | TimedOut:
    """One poll of the upstream job, judged. The deadline is checked first, so no upstream
    trouble extends a job forever; a 429 waits (no budget spent); other upstream errors (5xx,
    timeouts, malformed bodies) propagate to the house policy's error budget and backoff."""
    if (late := overdue(policy, waited)) is not None:
        return late
    try:
        video, hint = await provider.retrieve(event.upstream_id)
    except ProviderNotFound as exc:
        return Failed("upstream_lost", exc.message)
    except ProviderRejected as exc:
        return Failed("upstream_rejected", f"{exc.status}: {exc.message}")
    except ProviderRateLimited as exc:
        raise NackMessage(delay=policy.clamp(exc.retry_after_seconds)) from exc
    error = (video.error.code, video.error.message) if video.error else None
    return assess(
        policy, status=video.status, progress=video.progress, error=error, waited=waited,
        server_hint=hint, seconds=video.seconds,
    )  # fmt: skip


async def not_followed(emit: Emit, event: JobSubmittedV1, record: JobRecordV1 | None) -> None:
    """A job past polling: announce what this stage announced, should it have been lost."""
    if record is None:
        return
    if record.terminal:
        await announce_end(emit, record, SERVICE)
    elif record.status == JobStatus.GENERATED:
        await emit(generated(event, record.produced_seconds))  # redelivered after a crash


def waited_since_submit(record: JobRecordV1) -> float:
    submitted_at = record.history.get(JobStatus.SUBMITTED.value)
    if submitted_at is None:
        return 0.0
    return (datetime.now(UTC) - submitted_at).total_seconds()


async def progressed(
    jobs: JobStore, emit: Emit, event: JobSubmittedV1, record: JobRecordV1, progress: Pending
) -> None:
    """Progress is announced only when it moved forward (one fact per percentage)."""
    if record.status == JobStatus.GENERATING and progress.progress <= record.progress:
        return
    if await advance(jobs, event, report_progress, progress=progress.progress):
        fact = JobProgressV1.fact(
            event, key=str(progress.progress), upstream_id=event.upstream_id,
            upstream_status=progress.upstream_status, progress=progress.progress,
        )  # fmt: skip
        await emit(fact)


def generated(event: JobSubmittedV1, produced_seconds: int | None) -> JobGeneratedV1:
    return JobGeneratedV1.fact(
        event,
        upstream_id=event.upstream_id,
        cost_micros=event.cost_micros,
        produced_seconds=produced_seconds,
    )

"""poller handlers: follow submitted jobs with durable timers (delayed naks) to the end."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.exceptions import NackMessage

from services.poller.domain import Failed, Generated, Pending, PollPolicy, assess
from shared.contracts import (
    JobFailedV1,
    JobGeneratedV1,
    JobProgressV1,
    JobRecordV1,
    JobStatus,
    JobSubmittedV1,
    transition,
)
from shared.messaging import ServiceRouter
from shared.provider import (
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    VideoProvider,
)
from shared.runtime import Runtime

SERVICE = "poller"
UNLIMITED = -1  # each poll is a delivery; the policy's deadline bounds a job instead


def build_router(rt: Runtime, provider: VideoProvider, policy: PollPolicy) -> ServiceRouter:
    router = rt.router()

    @router.on(JobSubmittedV1, max_deliver=UNLIMITED, batch_size=32, max_workers=32)
    async def on_job_submitted(event: JobSubmittedV1) -> None:
        record = await rt.jobs.get(event.job_id)
        if record is None or record.terminal:
            return
        if record.status == JobStatus.GENERATED:
            await rt.emit(generated(event))  # redelivered after a crash: announce again
            return
        try:
            video, hint = await provider.retrieve(event.upstream_id)
        except ProviderNotFound as exc:
            await fail(rt, event, Failed("upstream_lost", exc.message))
            return
        except ProviderRateLimited as exc:
            raise NackMessage(delay=exc.retry_after_seconds or policy.default_delay) from exc
        except ProviderError as exc:
            # Transient: keep polling; the deadline still bounds the job.
            raise NackMessage(delay=policy.default_delay) from exc
        error = (video.error.code, video.error.message) if video.error else None
        decision = assess(
            policy,
            status=video.status,
            progress=video.progress,
            error=error,
            waited=waited_since_submit(record),
            server_hint=hint,
        )
        match decision:
            case Pending(progress=progress, delay=delay):
                await report_progress(rt, event, record, video.status, progress)
                raise NackMessage(delay=delay)
            case Generated():
                now = datetime.now(UTC)
                await rt.jobs.update(
                    event.job_id,
                    lambda r: r and transition(r, JobStatus.GENERATED, now, progress=100),
                )
                await rt.emit(generated(event))
            case Failed():
                await fail(rt, event, decision)

    return router


def waited_since_submit(record: JobRecordV1) -> float:
    submitted_at = record.history.get(JobStatus.SUBMITTED.value)
    if submitted_at is None:
        return 0.0
    return (datetime.now(UTC) - submitted_at).total_seconds()


async def report_progress(
    rt: Runtime, event: JobSubmittedV1, record: JobRecordV1, status: str, progress: int
) -> None:
    if record.status == JobStatus.GENERATING and progress <= record.progress:
        return
    now = datetime.now(UTC)
    await rt.jobs.update(
        event.job_id,
        lambda r: r and transition(r, JobStatus.GENERATING, now, progress=progress),
    )
    await rt.emit(
        JobProgressV1.caused_by(
            event,
            key=str(progress),
            upstream_id=event.upstream_id,
            upstream_status=status,
            progress=progress,
        )
    )


def generated(event: JobSubmittedV1) -> JobGeneratedV1:
    return JobGeneratedV1.caused_by(
        event, upstream_id=event.upstream_id, cost_micros=event.cost_micros
    )


async def fail(rt: Runtime, event: JobSubmittedV1, why: Failed) -> None:
    now = datetime.now(UTC)
    await rt.jobs.update(
        event.job_id,
        lambda r: r and transition(r, JobStatus.FAILED, now, reason=why.reason, detail=why.detail),
    )
    await rt.emit(
        JobFailedV1.caused_by(
            event,
            reason=why.reason,
            detail=why.detail,
            stage=SERVICE,
            upstream_id=event.upstream_id,
        )
    )

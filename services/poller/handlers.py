"""poller handlers: follow submitted jobs with durable timers (delayed naks) to the end."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.exceptions import NackMessage

from services.poller.domain import Failed, Generated, Pending, PollPolicy, assess, overdue
from shared.contracts import (
    JobGeneratedV1,
    JobProgressV1,
    JobRecordV1,
    JobStatus,
    JobSubmittedV1,
)
from shared.messaging import ServiceRouter
from shared.provider import (
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    VideoProvider,
)
from shared.runtime import Runtime

SERVICE = "poller"
MAX_ERRORS = 60  # consecutive-ish upstream errors (5xx, timeouts) before a job fails (~30 min)


def build_router(rt: Runtime, provider: VideoProvider, policy: PollPolicy) -> ServiceRouter:
    router = rt.router()

    async def fail(event: JobSubmittedV1, why: Failed) -> None:
        await rt.fail(
            job_id=event.job_id, tenant=event.tenant, cause_id=event.event_id,
            reason=why.reason, detail=why.detail, stage=SERVICE, upstream_id=event.upstream_id,
        )  # fmt: skip

    @router.on(JobSubmittedV1, max_errors=MAX_ERRORS, batch_size=32, max_workers=32)
    async def on_job_submitted(event: JobSubmittedV1) -> None:
        record = await rt.jobs.get(event.job_id)
        if record is None or record.terminal:
            return
        if record.status == JobStatus.GENERATED:
            await rt.emit(generated(event))  # redelivered after a crash: announce again
            return
        waited = waited_since_submit(record)
        if (late := overdue(policy, waited)) is not None:
            await fail(event, late)  # checked first: no upstream trouble extends a job forever
            return
        try:
            video, hint = await provider.retrieve(event.upstream_id)
        except ProviderNotFound as exc:
            await fail(event, Failed("upstream_lost", exc.message))
            return
        except ProviderRejected as exc:
            await fail(event, Failed("upstream_rejected", f"{exc.status}: {exc.message}"))
            return
        except ProviderRateLimited as exc:
            raise NackMessage(delay=policy.clamp(exc.retry_after_seconds)) from exc
        # Other upstream errors (5xx, timeouts, malformed bodies) propagate: the house retry
        # policy counts them against MAX_ERRORS and retries with backoff.
        error = (video.error.code, video.error.message) if video.error else None
        decision = assess(
            policy, status=video.status, progress=video.progress, error=error, waited=waited,
            server_hint=hint,
        )  # fmt: skip
        match decision:
            case Pending(progress=progress, delay=delay):
                await report_progress(rt, event, record, video.status, progress)
                raise NackMessage(delay=delay)
            case Generated():
                if await rt.advance(event.job_id, JobStatus.GENERATED, progress=100):
                    await rt.emit(generated(event))
            case Failed():
                await fail(event, decision)

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
    if await rt.advance(event.job_id, JobStatus.GENERATING, progress=progress):
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

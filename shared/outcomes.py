"""Job outcomes a stage records and announces: ending a job, and announcing an end again."""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from shared.contracts.events import (
    Event,
    JobCancelledV1,
    JobFailedV1,
    JobRef,
    JobRejectedV1,
    JobTimedOutV1,
)
from shared.contracts.jobs import JobRecordV1
from shared.contracts.lifecycle import JobStatus, cancel, fail, time_out
from shared.contracts.stage import Cancelling, Disagrees, Ended, Live, Screened, Unknown
from shared.jobstore import JobStore, advance

log = logging.getLogger("clipline.stage")


class Emit(Protocol):
    async def __call__(self, event: Event) -> None: ...


async def end_job(
    jobs: JobStore,
    emit: Emit,
    job: JobRef,
    *,
    reason: str,
    detail: str,
    stage: str,
    upstream_id: str | None = None,
    how: Literal["fail", "time_out"] = "fail",
) -> None:
    """End a job as failed (or timed out): the record first, then the fact (unless it ended
    otherwise meanwhile). A job with no record (poison about an unknown job) is announced too,
    so every refusal is visible."""
    detail = detail[:1000]
    step = fail if how == "fail" else time_out
    record = await advance(jobs, job, step, reason=reason, detail=detail, stage=stage)
    if record is None and await jobs.get(job.tenant, job.job_id) is not None:
        return  # completed, rejected or ended otherwise meanwhile: nothing to announce
    if record is not None and record.reason != reason:
        return  # it had already ended for another reason, which was announced then
    kind = JobFailedV1 if how == "fail" else JobTimedOutV1
    await emit(kind.fact(job, reason=reason, detail=detail, stage=stage, upstream_id=upstream_id))


async def cancel_job(
    jobs: JobStore,
    emit: Emit,
    job: JobRef,
    *,
    stage: str,
    detail: str | None = None,
    upstream_id: str | None = None,
) -> JobRecordV1 | None:
    """End a `cancelling` job as cancelled: the record first, then the fact. Returns the
    cancelled record (also when an earlier delivery cancelled it: announced again, the fact's
    id drops the repeat), or None when the job is not cancelling (not asked, or it ended
    otherwise meanwhile): then nothing is announced. `upstream_id`: a create in flight at the
    cancel answered with this video, recorded as the sunk cost. Without a `detail`, the record
    says what the cancel left behind (lifecycle.cancel_detail)."""
    record = await advance(jobs, job, cancel, stage=stage, detail=detail, upstream_id=upstream_id)
    if record is not None:
        await emit(cancelled(record))
    return record


def cancelled(record: JobRecordV1) -> JobCancelledV1:
    """The end event of a cancelled job, from its record (the same however often it is built)."""
    return JobCancelledV1.fact(
        record,
        detail=record.detail or "",
        stage=record.stage or "",
        upstream_id=record.upstream_id,
    )


async def announce_end(emit: Emit, record: JobRecordV1, stage: str) -> None:
    """Announce again how `stage` ended a job, from its record: the process may have died
    between recording the end and announcing it (the fact's id drops a duplicate). Outcomes of
    other stages, and jobs not ended, are left alone."""
    if record.stage != stage or not record.terminal:
        return
    common = {"reason": record.reason or "", "detail": record.detail or "", "stage": stage}
    if record.status == JobStatus.REJECTED:
        await emit(JobRejectedV1.fact(record, **common))
    elif record.status == JobStatus.FAILED:
        await emit(JobFailedV1.fact(record, upstream_id=record.upstream_id, **common))
    elif record.status == JobStatus.TIMED_OUT:
        await emit(JobTimedOutV1.fact(record, upstream_id=record.upstream_id, **common))
    elif record.status == JobStatus.CANCELLED:
        await emit(cancelled(record))


def ignored(stage: str, event: Event, why: Unknown | Disagrees) -> None:
    """Log, once per delivery (the message is then acked, never retried), an event that
    changes nothing: its job has no record, or its facts are not the record's."""
    what = "no record of the job" if isinstance(why, Unknown) else why.detail
    log.warning("%s: ignored %s of job %s: %s", stage, event.kind, event.job_id, what)


async def screened(
    stage: str, emit: Emit, event: Event, verdict: Screened
) -> Live | Cancelling | None:
    """The guards every stage shares, carried out: an event about no record, or whose facts
    are not the record's, is logged and changes nothing; a job that ended is announced again
    by the stage that ended it. What is left for the stage to decide is returned."""
    match verdict:
        case Unknown() | Disagrees():
            ignored(stage, event, verdict)
            return None
        case Ended(record=record):
            await announce_end(emit, record, stage)
            return None
    return verdict

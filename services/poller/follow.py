"""Following one upstream job: look at its video, judge it, record and announce the result.

The poll (a delayed redelivery of `submitted`) and the webhook (a signed "look now") both come
through `follow`, so the two paths cannot judge a video differently or record it twice: every
step is a lifecycle function a repeat is refused by, and every announcement a fact of the job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.poller.domain import (
    Failed,
    Generated,
    Pending,
    PollPolicy,
    Seen,
    Throttled,
    TimedOut,
    assess,
    look_again,
    overdue,
    worth_announcing,
)
from services.poller.ports import Deps
from shared.contracts import JobGeneratedV1, JobProgressV1, JobRecordV1
from shared.contracts.lifecycle import JobStatus, mark_generated, report_progress
from shared.jobstore import JobStore, advance
from shared.logs import note_wait
from shared.outcomes import Emit, end_job
from shared.provider import (
    ProviderError,
    ProviderNotFound,
    ProviderRateLimited,
    ProviderRejected,
    UpstreamVideo,
    VideoProvider,
)

SERVICE = "poller"
log = logging.getLogger("clipline.poller")
CLOCK_SLACK = timedelta(seconds=60)
"""How far the upstream's clock may be behind ours before its created_at is not believed."""
FOLLOWED = (JobStatus.SUBMITTED, JobStatus.GENERATING)


@dataclass(frozen=True, slots=True)
class Followed:
    """The upstream job to look at, from the job's record (never from an event: the poll's
    `submitted` and the webhook only say which job to look at now)."""

    tenant: str
    job_id: str
    upstream_id: str
    cost_micros: int

    @classmethod
    def of_record(cls, record: JobRecordV1) -> Followed | None:
        if record.upstream_id is None or record.cost_micros is None:
            return None
        return cls(record.tenant, record.job_id, record.upstream_id, record.cost_micros)


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """The upstream video was done, but the job's record had moved on since it was read (a
    cancel, or another's look recorded it): nothing recorded or announced by this look."""


async def follow(
    deps: Deps, job: Followed, record: JobRecordV1
) -> Pending | Throttled | Elsewhere | None:
    """One look at a followed job (`record` in FOLLOWED) and its consequence: progress recorded
    and announced (Pending: look again later), a 429 (Throttled: look again after its delay),
    the job generated, failed or timed out, recorded and announced (None: past following), or
    the video done on a record no longer followed (Elsewhere: the caller decides again)."""
    match await look(deps.provider, deps.policy, job.upstream_id, running_for(record)):
        case Pending() as pending:
            await progressed(deps.jobs, deps.emit, job, record, pending)
            return pending
        case Throttled() as throttled:
            return throttled
        case Generated(produced_seconds=produced, took=took, expires_at=expires):
            done = await advance(
                deps.jobs, job, mark_generated, produced_seconds=produced,
                expires_at=upstream_expiry(expires),
            )  # fmt: skip
            if done is None:
                return Elsewhere()
            await deps.emit(generated(done))
            ran = running_for(record) if took is None else took
            deps.observer.generation(record.spec.model, record.spec.size, "completed", ran)
            if took is not None:
                await learn(deps, record, job.upstream_id, took)
        case Failed() | TimedOut() as why:
            outcome = "timed_out" if isinstance(why, TimedOut) else "failed"
            deps.observer.generation(
                record.spec.model, record.spec.size, outcome, running_for(record)
            )
            await end_job(
                deps.jobs, deps.emit, job, reason=why.reason, detail=why.detail, stage=SERVICE,
                upstream_id=job.upstream_id,
                how="time_out" if isinstance(why, TimedOut) else "fail",
            )  # fmt: skip
    return None


async def look(
    provider: VideoProvider, policy: PollPolicy, upstream_id: str, waited: float
) -> Pending | Throttled | Generated | Failed | TimedOut:
    """One retrieve of the upstream job, judged. Past the deadline the upstream is still asked
    first (a video finished in the last interval is taken, not timed out); the job times out
    when the upstream says it still runs, or cannot say (a 429 or an error past the deadline),
    so no upstream trouble extends a job forever. Before it, a 429 waits (no budget spent) and
    other upstream errors (5xx, timeouts, malformed bodies) propagate to the caller (the poll's
    house error budget and backoff; the webhook's 503, which the sender retries), unless the
    policy lets the look try again first (domain.look_again)."""
    late = overdue(policy, waited)
    try:
        video, hint = await retrieve(provider, policy, upstream_id, again=late is None)
    except ProviderNotFound as exc:
        return Failed("upstream_lost", exc.message)
    except ProviderRejected as exc:
        return Failed("upstream_rejected", f"{exc.status}: {exc.message}")
    except ProviderRateLimited as exc:
        return late or Throttled(policy.clamp(exc.retry_after_seconds))
    except Exception:
        if late is not None:
            return late
        raise
    seen = Seen(
        status=video.status, progress=video.progress,
        error=(video.error.code, video.error.message) if video.error else None,
        seconds=video.seconds, created_at=video.created_at, completed_at=video.completed_at,
        expires_at=video.expires_at,
    )  # fmt: skip
    return assess(policy, seen, waited=waited, now=time.time(), server_hint=hint)


async def retrieve(
    provider: VideoProvider, policy: PollPolicy, upstream_id: str, *, again: bool
) -> tuple[UpstreamVideo, float | None]:
    """The upstream's video; a retryable failure is tried again (`again`) as long as
    `look_again` says, after the wait it says (a timer, not synchronisation)."""
    tries = 0
    while True:
        try:
            return await provider.retrieve(upstream_id)
        except ProviderError as exc:
            tries += 1
            limited = isinstance(exc, ProviderRateLimited)
            asked = exc.retry_after_seconds if isinstance(exc, ProviderRateLimited) else None
            wait = (
                look_again(policy, tries, rate_limited=limited, retry_after=asked)
                if again and exc.retryable
                else None
            )
            if wait is None:
                raise
            note_wait("look_429" if limited else "look_retry", wait, asked)
            await asyncio.sleep(wait)


async def learn(deps: Deps, record: JobRecordV1, video_id: str, took: float) -> None:
    """Learn how long the job took upstream (once per video, however many looks saw it end).
    Best effort: the job is already generated, and a lost sample only leaves the expectation
    as it was."""
    try:
        await deps.expectations.finished(record.spec, video_id, took)
    except Exception as exc:  # a store hiccup must not fail a generated job
        log.warning("poller: could not record the generation time of %s: %s", record.job_id, exc)


async def not_followed(emit: Emit, record: JobRecordV1) -> None:
    """A live job past polling: announce what this stage announced, should it have been lost."""
    if record.status == JobStatus.GENERATED:
        await emit(generated(record))  # redelivered after a crash


def upstream_expiry(epoch: int | None) -> datetime | None:
    """The upstream's `expires_at` (epoch seconds) as a time for the record; None when absent
    or not a time at all (its value is the upstream's, not ours to trust)."""
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def running_for(record: JobRecordV1) -> float:
    """How long the upstream job has run: since it was created upstream (its own `created_at`,
    recorded at submission), else since `submitted`. An adopted job (a create whose answer was
    lost) may have run, or even finished, well before it was recorded submitted."""
    now = datetime.now(UTC)
    submitted = record.history.get(JobStatus.SUBMITTED.value)
    started = record.upstream_created_at or submitted
    if started is None:
        return 0.0
    # The upstream's clock is not ours: its time is trusted only between the job's admission
    # (no create can be older) and its submission (none can be newer).
    admitted = record.history.get(JobStatus.ADMITTED.value)
    if admitted is not None and started < admitted - CLOCK_SLACK:
        started = admitted - CLOCK_SLACK
    if submitted is not None and started > submitted:
        started = submitted
    return max(0.0, (now - started).total_seconds())


async def progressed(
    jobs: JobStore, emit: Emit, job: Followed, record: JobRecordV1, progress: Pending
) -> None:
    """Progress is recorded and announced only on a meaningful change: generation seen to
    start, or PROGRESS_STEP points more (one fact per value announced)."""
    started = record.status == JobStatus.GENERATING
    if not worth_announcing(started=started, recorded=record.progress, progress=progress.progress):
        return
    if await advance(jobs, job, report_progress, progress=progress.progress):
        fact = JobProgressV1.fact(
            job, key=str(progress.progress), upstream_id=job.upstream_id,
            upstream_status=progress.upstream_status, progress=progress.progress,
        )  # fmt: skip
        await emit(fact)


def generated(record: JobRecordV1) -> JobGeneratedV1:
    """The `generated` fact, its copies of the facts from the generated record (storage acts
    on the record's: these are for subscribers)."""
    return JobGeneratedV1.fact(
        record,
        upstream_id=record.upstream_id or "",
        cost_micros=record.cost_micros or 0,
        produced_seconds=record.produced_seconds,
        expires_at=record.expires_at,
    )

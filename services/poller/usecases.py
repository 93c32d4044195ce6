"""poller use cases: the look a verified webhook asks for (the poll's own look is
follow.follow), without a read for a job this process holds (held.py); called by the webhook
endpoint."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from opentelemetry.trace import SpanKind

from services.poller.domain import Pending, Throttled, VideoEvent
from services.poller.follow import FOLLOWED, SERVICE, Elsewhere, Followed, follow, not_followed
from services.poller.held import Held, HeldTimers
from services.poller.ports import WebhookDeps
from shared.contracts import JobRecordV1
from shared.contracts.lifecycle import JobStatus
from shared.logs import job_context
from shared.outcomes import announce_end, cancel_job
from shared.telemetry import in_job_trace


@dataclass(frozen=True, slots=True)
class UnknownVideo:
    """No job of ours owns the video (another client's, or not linked yet: the poll covers)."""


@dataclass(frozen=True, slots=True)
class NotFollowed:
    """The job is not (or no longer) being followed: nothing to look at."""

    job_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Looked:
    """The upstream video was retrieved and judged, as a poll would have."""

    job_id: str
    still_running: bool


async def announce_recorded(deps: WebhookDeps, event: VideoEvent) -> None:
    """A webhook another taker holds (a replay, or the retry of one whose taker died mid-look):
    announce what its job's record already says this stage did. A taker that died between
    recording `generated` and announcing it leaves its claim until it is stale; the sender's
    retries meanwhile announce the fact (under its one id) instead of the job's safety poll."""
    owner = await deps.upstream.owner(event.video_id)
    record = await deps.follow.jobs.get(*owner) if owner is not None else None
    if record is not None:
        await not_followed(deps.follow.emit, record)


async def on_video_event(
    deps: WebhookDeps, event: VideoEvent
) -> UnknownVideo | NotFollowed | Looked | Throttled:
    """A verified webhook: find the job and look at its video now. The payload's claim
    (completed, failed) is not trusted: the upstream's answer decides.

    A job whose `submitted` delivery this process holds in a delayed nak (held.py) is known
    without a read: its job, upstream id and record are the handling's. The look's write is a
    compare-and-set against that record's revision, so a record changed meanwhile (a cancel) is
    read again and decided on again. Once the job is past following here, the held delivery
    is acked: its poll is not redelivered. Any other job is found through the upstream index
    and its record read."""
    held = deps.follow.held.take(event.video_id) if deps.follow.held is not None else None
    seen = Seen(UnknownVideo())
    try:
        seen = await _look(deps, event, held)
    finally:
        if deps.follow.held is not None:
            await _settle(deps.follow.held, held, seen)
    if seen.moved_on and seen.job is not None:
        deps.follow.observer.moved_on(seen.job)  # no longer waiting here
    return seen.outcome


Outcome = UnknownVideo | NotFollowed | Looked | Throttled
PAST_FOLLOWING = (JobStatus.GENERATED, JobStatus.STORING)
"""Live states a followed job moves on to: its poll, redelivered, would only ack."""


@dataclass(frozen=True, slots=True)
class Seen:
    """A webhook's look: its outcome; the job it was about; whether that job is now past
    following (its poll, redelivered, would only find it moved on and announce what was
    announced); and its record as still followed, unchanged (None: not known)."""

    outcome: Outcome
    job: tuple[str, str] | None = None
    moved_on: bool = False
    known: JobRecordV1 | None = None


async def _settle(timers: HeldTimers, held: Held | None, seen: Seen) -> None:
    """The held delivery of the job looked at is acked (moved on) or held again; with none
    held, a handling of the job under way is told it moved on (it acks, not waits)."""
    if held is not None and seen.job == held.key:
        await timers.settle(held, moved_on=seen.moved_on, record=seen.known)
        return
    await timers.settle(held, moved_on=False, record=None)  # the index named another job
    if seen.moved_on and seen.job is not None:
        await timers.moved_on(seen.job)


async def _look(deps: WebhookDeps, event: VideoEvent, held: Held | None) -> Seen:
    if held is not None and held.record is not None:
        known = held.record
        with webhook_span(known, held.traceparent), job_context(held.job.job_id):
            looked = await follow(deps.follow, held.job, known)
        if not isinstance(looked, Elsewhere):
            return _looked(held.job, looked, known)
        owner: tuple[str, str] | None = held.key  # the record changed: decide again
    else:
        owner = await deps.upstream.owner(event.video_id)
    if owner is None:  # perhaps a lost create's, adopted later: its first poll looks at once
        await deps.follow.early.tell(event.video_id)
        return Seen(UnknownVideo())
    record = await deps.follow.jobs.get(*owner)
    if record is not None and record.status == JobStatus.CANCELLING:
        # The index says the video is this job's: its upstream job exists (the sunk cost),
        # even when the cancel came before `submitted` recorded it.
        ended = await cancel_job(
            deps.follow.jobs, deps.follow.emit, record, stage=SERVICE, upstream_id=event.video_id
        )
        status = (ended or record).status.value
        return Seen(NotFollowed(owner[1], status), owner, moved_on=ended is not None)
    job = Followed.of_record(record) if record is not None else None
    if record is None or job is None or record.status not in FOLLOWED:
        if record is not None and not record.terminal and record.upstream_id is None:
            await deps.follow.early.tell(event.video_id)  # linked, not yet `submitted`
        if record is not None:
            # A replica that died between recording `generated` and announcing it: the
            # sender's retry announces it now, not the job's safety poll a minute later.
            await not_followed(deps.follow.emit, record)
        past = record is not None and (record.terminal or record.status in PAST_FOLLOWING)
        if record is not None and past:  # what its poll, redelivered, would announce of an end
            await announce_end(deps.follow.emit, record, SERVICE)
        status = record.status.value if record else "absent"
        return Seen(NotFollowed(owner[1], status), owner, moved_on=past)
    parent = held.traceparent if held is not None and held.key == owner else None
    with webhook_span(record, parent), job_context(job.job_id):
        looked = await follow(deps.follow, job, record)
    if isinstance(looked, Elsewhere):  # a cancel meanwhile: the poll's redelivery decides
        return Seen(Looked(job.job_id, still_running=False), owner)
    return _looked(job, looked, None)  # a held record is only ever the handling's own read


def webhook_span(record: JobRecordV1, parent: str | None) -> AbstractContextManager[None]:
    """The look a webhook asks for: a span in its job's trace (kept on the record), the
    server side of the upstream's call; under `parent` (the held delivery's traceparent, a
    span of that trace) when known."""
    attributes = {"clipline.job.id": record.job_id, "clipline.tenant": record.tenant}
    return in_job_trace(
        record.trace_id, "poller webhook", attributes, kind=SpanKind.SERVER, parent=parent
    )


def _looked(job: Followed, looked: Pending | Throttled | None, known: JobRecordV1 | None) -> Seen:
    """A look by `follow` at a followed job: `known`, the record it looked with, is still the
    record when nothing was recorded (Throttled)."""
    key = (job.tenant, job.job_id)
    match looked:
        case Throttled() as throttled:
            return Seen(throttled, key, known=known)
        case Pending():
            return Seen(Looked(job.job_id, still_running=True), key)
    return Seen(Looked(job.job_id, still_running=False), key, moved_on=True)

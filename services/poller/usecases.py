"""poller use cases: the look a verified webhook asks for (the poll's own look is
follow.follow); called by the webhook endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from services.poller.domain import Pending, Throttled, VideoEvent
from services.poller.follow import FOLLOWED, SERVICE, Followed, follow, not_followed
from services.poller.ports import WebhookDeps
from shared.contracts.lifecycle import JobStatus
from shared.logs import job_context
from shared.outcomes import cancel_job
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
    """A verified webhook: find the job through the index and look at its video now. The
    payload's claim (completed, failed) is not trusted: the upstream's answer decides."""
    owner = await deps.upstream.owner(event.video_id)
    if owner is None:  # perhaps a lost create's, adopted later: its first poll looks at once
        await deps.follow.early.tell(event.video_id)
        return UnknownVideo()
    record = await deps.follow.jobs.get(*owner)
    if record is not None and record.status == JobStatus.CANCELLING:
        # The index says the video is this job's: its upstream job exists (the sunk cost),
        # even when the cancel came before `submitted` recorded it.
        ended = await cancel_job(
            deps.follow.jobs, deps.follow.emit, record, stage=SERVICE, upstream_id=event.video_id
        )
        return NotFollowed(owner[1], (ended or record).status.value)
    job = Followed.of_record(record) if record is not None else None
    if record is None or job is None or record.status not in FOLLOWED:
        if record is not None and not record.terminal and record.upstream_id is None:
            await deps.follow.early.tell(event.video_id)  # linked, not yet `submitted`
        if record is not None:
            # A replica that died between recording `generated` and announcing it: the
            # sender's retry announces it now, not the job's safety poll a minute later.
            await not_followed(deps.follow.emit, record)
        return NotFollowed(owner[1], record.status.value if record else "absent")
    with in_job_trace(record.trace_id, "poller webhook"), job_context(job.job_id):
        looked = await follow(deps.follow, job, record)
    match looked:
        case Throttled() as throttled:
            return throttled
        case Pending():
            return Looked(job.job_id, still_running=True)
    return Looked(job.job_id, still_running=False)

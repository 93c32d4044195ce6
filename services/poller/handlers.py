"""poller handlers: follow submitted jobs with durable timers (delayed naks) to the end; and
look at once at the job a verified webhook names."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated

from faststream.exceptions import NackMessage

from services.poller.domain import Pending, Throttled, VideoEvent
from services.poller.follow import (
    FOLLOWED,
    SERVICE,
    Followed,
    follow,
    not_followed,
    running_for,
)
from services.poller.ports import Deps, WebhookDeps
from services.poller.schedule import after_look, first_look
from shared.contracts import (
    JobCancelledV1,
    JobGeneratedV1,
    JobProgressV1,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.lifecycle import JobStatus
from shared.messaging import Context, ServiceRouter
from shared.outcomes import cancel_job
from shared.telemetry import in_job_trace

MAX_ERRORS = 60  # upstream errors (5xx, timeouts) over a job's whole follow-up before it fails
MAX_FOLLOWED = 100_000
"""Jobs the poller's consumer may hold waiting for their next look at once (each a message in a
delayed nak): above JetStream's default of 1000, so 10,000 jobs in flight are all followed."""
PollerDeps = Annotated[Deps, Context("deps")]


def build_router() -> ServiceRouter:
    router = ServiceRouter(
        SERVICE, emits=[JobProgressV1, JobGeneratedV1, JobTimedOutV1, JobCancelledV1]
    )

    @router.on(JobSubmittedV1, max_errors=MAX_ERRORS, max_workers=32, max_ack_pending=MAX_FOLLOWED)
    async def on_job_submitted(event: JobSubmittedV1, deps: PollerDeps) -> None:
        job = Followed.of_submitted(event)
        record = await deps.jobs.get(event.tenant, event.job_id)
        if record is not None and record.status == JobStatus.CANCELLING:
            await cancel_job(deps.jobs, deps.emit, job, stage=SERVICE)  # stop following it
            return
        if record is None or record.status not in FOLLOWED:
            await not_followed(deps.emit, job, record)
            return
        # Every wait is a delayed nak: the durable timer of the next look, kept by JetStream.
        expected = await deps.expectations.expected(record.spec)
        early = first_look(deps.policy, waited=running_for(record), expected=expected)
        if early is not None and not await deps.early.told(job.upstream_id):
            raise NackMessage(delay=early)  # surely still running: no GET yet
        match await follow(deps, job, record):
            case Pending(hint=hint):
                waited = running_for(record)
                draw = random.random()  # noqa: S311 - jitter, not security
                delay = after_look(
                    deps.policy, waited=waited, expected=expected, hint=hint, draw=draw
                )
                raise NackMessage(delay=delay)
            case Throttled(delay=delay):
                raise NackMessage(delay=delay)

    return router


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
        return NotFollowed(owner[1], record.status.value if record else "absent")
    with in_job_trace(record.trace_id, "poller webhook"):
        looked = await follow(deps.follow, job, record)
    match looked:
        case Throttled() as throttled:
            return throttled
        case Pending():
            return Looked(job.job_id, still_running=True)
    return Looked(job.job_id, still_running=False)

"""poller handlers: follow submitted jobs, by their record, with durable timers (delayed
naks) to the end; each delivery left in a delayed nak is remembered (held.py), so a webhook
that moves its job on acks it at once. Registered on the router in app.py."""

import random
from typing import Annotated

from faststream.exceptions import NackMessage

from services.poller.domain import Pending, Throttled
from services.poller.follow import (
    FOLLOWED,
    SERVICE,
    Elsewhere,
    Followed,
    follow,
    not_followed,
    running_for,
)
from services.poller.held import Held
from services.poller.ports import Deps
from services.poller.schedule import after_look, first_look
from shared.contracts import JobRecordV1, JobSubmittedV1
from shared.contracts.stage import Cancelling, Live, screen
from shared.logs import note_wait
from shared.messaging import Context, Message
from shared.outcomes import cancel_job, screened
from shared.telemetry import short_span

MAX_ERRORS = 60  # upstream errors (5xx, timeouts) over a job's whole follow-up before it fails
MAX_FOLLOWED = 100_000
"""Jobs the poller's consumer may hold waiting for their next look at once (each a message in a
delayed nak): above JetStream's default of 1000, so 10,000 jobs in flight are all followed."""
# Real annotations here (no `from __future__ import annotations`): FastStream resolves string
# annotations by name, also in its callers' frames, where a local of the same name wins.
PollerDeps = Annotated[Deps, Context("deps")]
_TRACER = "clipline.poller"


async def on_job_submitted(event: JobSubmittedV1, deps: PollerDeps, msg: Message) -> None:
    """Look at the upstream job the record names (a `submitted` naming another is ignored)."""
    # A delivery acked here leaves the job past following (no longer counted as waiting); one
    # left in a delayed nak, or failed (retried), keeps it followed.
    await poll(event, deps, msg)
    deps.observer.moved_on((event.tenant, event.job_id))


async def poll(event: JobSubmittedV1, deps: Deps, msg: Message) -> None:
    if deps.held is not None:
        deps.held.arrived(event.tenant, event.job_id)  # back from its timer, if it had one
    record = await deps.jobs.get(event.tenant, event.job_id)
    match await screened(SERVICE, deps.emit, event, screen(record, event)):
        case Cancelling(record=asked):
            await cancel_job(deps.jobs, deps.emit, asked, stage=SERVICE)  # stop following it
            return
        case Live(record=live) if live.status in FOLLOWED:
            record = live
        case Live(record=live):
            await not_followed(deps.emit, live)
            return
        case _:
            return
    job = Followed.of_record(record)
    if job is None:  # followed, yet no upstream id or cost on record: nothing to look at
        return
    # Every wait is a delayed nak: the durable timer of the next look, kept by JetStream.
    expected = await deps.expectations.expected(record.spec)
    deps.observer.following((job.tenant, job.job_id), running_for(record), expected)
    early = first_look(deps.policy, waited=running_for(record), expected=expected)
    if early is not None and not await deps.early.told(job.upstream_id):
        if not hold(deps, msg, job, record):
            return  # a webhook moved it on meanwhile: nothing to wait for
        note_wait("first_look", early)
        raise NackMessage(delay=early)  # surely still running: no GET yet
    match await look(deps, job, record):
        case Pending(hint=hint):
            waited = running_for(record)
            draw = random.random()  # noqa: S311 - jitter, not security
            delay = after_look(deps.policy, waited=waited, expected=expected, hint=hint, draw=draw)
            if not hold(deps, msg, job, None):  # its look may have recorded progress
                return
            note_wait("next_look", delay, hint)
            raise NackMessage(delay=delay)
        case Throttled(delay=delay):
            if not hold(deps, msg, job, record):
                return
            deps.observer.rate_limited(record.spec.model, delay)
            note_wait("poll_429", delay)
            raise NackMessage(delay=delay)


async def look(deps: Deps, job: Followed, record: JobRecordV1) -> Pending | Throttled | None:
    """One poll's look at the job: a short span of its own in the job's trace (under the
    delivery's), counted by outcome. None: the job is past following (ended, or moved on)."""
    attributes = {"clipline.job.id": job.job_id, "clipline.tenant": job.tenant}
    with short_span(_TRACER, "clipline.poll", attributes) as span:
        try:
            looked = await follow(deps, job, record)
        except Exception:
            deps.observer.poll("error")
            raise
        outcome = outcome_of(looked)
        span.set_attribute("clipline.poll.outcome", outcome)
        deps.observer.poll(outcome)
    return None if isinstance(looked, Elsewhere) else looked


def outcome_of(looked: Pending | Throttled | Elsewhere | None) -> str:
    """A look's outcome as the polls metric names it."""
    match looked:
        case Pending():
            return "pending"
        case Throttled():
            return "throttled"
        case Elsewhere():
            return "elsewhere"
    return "ended"


def hold(deps: Deps, msg: Message, job: Followed, record: JobRecordV1 | None) -> bool:
    """This delivery is about to wait in a delayed nak: remember where its ack goes. False
    when a webhook's look here moved the job past following since the delivery arrived (it
    recorded and announced what this stage does): the delivery is acked instead."""
    if deps.held is None or not (reply := msg.raw_message.reply):
        return True
    headers = msg.raw_message.headers or {}
    return deps.held.hold(Held(reply, job, record, headers.get("traceparent")))

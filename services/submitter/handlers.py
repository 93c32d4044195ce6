"""submitter handlers: create admitted jobs upstream, recording `submitting` before the POST."""

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Annotated

from faststream.exceptions import NackMessage

from services.submitter.domain import (
    ATTEMPT_LEASE_SECONDS,
    CLOCK_SLACK_SECONDS,
    Adopt,
    Ambiguous,
    Cancel,
    Candidate,
    Expired,
    InFlight,
    NoMatch,
    Reconcile,
    Resend,
    Skip,
    Submit,
    Wanted,
    matching,
    plan,
    rate_limit_delay,
    reconcile,
    rejection,
    source_problem,
)
from services.submitter.ports import Deps
from services.submitter.rates import Wait
from shared import metrics
from shared.contracts import (
    InputReference,
    JobAdmittedV1,
    JobCancelRequestedV1,
    JobRecordV1,
    JobSubmittedV1,
)
from shared.contracts.events import Event, JobRef
from shared.contracts.lifecycle import (
    CreateOutcome,
    IllegalTransition,
    JobStatus,
    begin_submit,
    end_attempt,
    mark_submitted,
    renew_attempt,
    retry_submit,
)
from shared.contracts.stage import screen
from shared.inputs import InputMissingError, InputStore
from shared.jobstore import JobStore, StoreConflictError, advance
from shared.logs import note_wait
from shared.messaging import Context, periodically
from shared.outcomes import cancel_job, end_job, screened
from shared.provider import (
    CreateVideo,
    InputImage,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    UpstreamVideo,
)
from shared.provider.ids import is_valid_video_id

SERVICE = "submitter"
RATE_SLOT_LEASE = 300.0
"""How long a create may hold its rate slot should its replica die: well past the upstream
timeout (30 s per phase by default) of even a slow upload with an input image."""
log = logging.getLogger("clipline.submitter")


class InputImageError(Exception):
    """The job's input image is missing or not the one that was validated."""


# Real annotations here (no `from __future__ import annotations`): FastStream resolves string
# annotations by name, also in its callers' frames, where a local of the same name wins.
SubmitterDeps = Annotated[Deps, Context("deps")]


async def _record_to_act_on(event: Event, deps: Deps) -> JobRecordV1 | None:
    """The job's record when it is live or cancelling; None when there is no such job, the
    event's facts are not the record's, or the job ended (its end announced again)."""
    found = await deps.jobs.get(event.tenant, event.job_id)
    verdict = await screened(SERVICE, deps.emit, event, screen(found, event))
    return None if verdict is None else verdict.record


async def on_job_admitted(event: JobAdmittedV1, deps: SubmitterDeps) -> None:
    """Create the job upstream exactly as its record says (never the event's copy)."""
    found = await deps.jobs.get(event.tenant, event.job_id)
    if found is not None and found.terminal and found.upstream_id is not None:
        # Created, and ended before this delivery: a process that died between recording
        # `submitted` and announcing it left the announcement to this one (one fact id).
        await deps.emit(submitted(found, found.upstream_id))
    verdict = await screened(SERVICE, deps.emit, event, screen(found, event))
    if verdict is None:
        return
    record = verdict.record
    match decide(record, deps.submit_deadline):
        case Skip():
            return
        case Resend(upstream_id=upstream_id):
            await deps.emit(submitted(record, upstream_id))
        case InFlight(retry_in=retry_in):
            # A live attempt elsewhere (a duplicate delivery): waiting spends no budget.
            note_wait("in_flight", retry_in + 0.5)
            raise NackMessage(delay=retry_in + 0.5)
        case Expired(detail=detail):
            await end(deps, record, "submit_timeout", detail, how="time_out")
        case Submit():
            await submit(deps, record, record.submit_attempts)
        case Reconcile(answer_lost=answer_lost):
            await reconcile_then_submit(deps, record, answer_lost=answer_lost)
        case Cancel():
            await cancel_job(deps.jobs, deps.emit, record, stage=SERVICE)


# The prompt end of a cancel, whatever stage the job is at (its own next delivery there may
# be a long delayed redelivery). Here, because only the submitter's creates race a cancel:
# no create can start once the job is `cancelling` (begin_submit never leaves it), and one
# already running keeps its lease renewed until it answers, so ending a cancelling job
# only when no live lease is on it never loses what the upstream made.
async def on_job_cancel_requested(event: JobCancelRequestedV1, deps: SubmitterDeps) -> None:
    if (record := await _record_to_act_on(event, deps)) is None:
        return
    match decide(record, deps.submit_deadline):
        case Cancel():
            await cancel_job(deps.jobs, deps.emit, record, stage=SERVICE)
        case InFlight(retry_in=retry_in):
            raise NackMessage(delay=retry_in + 0.5)  # the create answers, or its lease ends


async def reconcile_then_submit(deps: Deps, record: JobRecordV1, *, answer_lost: bool) -> None:
    """Before creating again, look for the earlier attempt's video upstream and adopt it."""
    try:
        verdict, listed = await upstream_match(deps, record, answer_lost=answer_lost)
    except ProviderRateLimited as exc:  # waiting for capacity is not an error
        delay = rate_limit_delay(exc.retry_after_seconds)
        held_back(deps, record.spec.model, "upstream_429", delay)
        note_wait("list_429", delay, exc.retry_after_seconds)
        raise NackMessage(delay=delay) from exc
    match verdict:
        case Adopt(upstream_id=upstream_id):
            log.info("submitter: job %s adopts upstream %s", record.job_id, upstream_id)
            created = next((v.created_at for v in listed if v.id == upstream_id), None)
            await recorded(deps, record, upstream_id, created)
        case NoMatch():
            await submit(deps, record, record.submit_attempts)
        case Ambiguous(detail=detail):
            await end(deps, record, "create_ambiguous", detail)


async def upstream_match(
    deps: Deps, record: JobRecordV1, *, answer_lost: bool
) -> tuple[Adopt | NoMatch | Ambiguous, list[UpstreamVideo]]:
    """Which of the upstream's recent videos, if any, is the job's earlier create; and them."""
    spec = record.spec
    first = record.history.get(JobStatus.SUBMITTING.value) or record.last_attempt_at
    since = first.timestamp() if first else 0.0
    began = time.monotonic()
    try:
        listed = await deps.provider.recent(since=int(since - CLOCK_SLACK_SECONDS))
    finally:
        note_wait("reconcile_list", time.monotonic() - began)
    videos = [
        Candidate(v.id, v.model, v.size, v.seconds, v.prompt, v.created_at, v.remixed_from_video_id)
        for v in listed
    ]
    source, _ = await source_video(deps, record)
    want = Wanted(spec.model, spec.size, spec.video_seconds, spec.prompt, source)
    candidates = matching(want, since, videos)
    owners = {c: await deps.upstream.owner(c) for c in candidates}
    mine = (record.tenant, record.job_id)
    owned = frozenset(c for c, owner in owners.items() if owner is not None and owner != mine)
    return reconcile(candidates, owned, answer_lost=answer_lost), listed


async def found_at_once(deps: Deps, job: JobRef) -> UpstreamVideo | None:
    """A create whose answer was lost, looked for upstream at once: the video when the listing
    already shows exactly one unowned match (what the next delivery's reconcile would adopt,
    without the error's backoff before it). Anything else (no match yet, several, a failed
    listing, a record that no longer says so) leaves the job to that delivery, as before."""
    try:
        record = await deps.jobs.get(job.tenant, job.job_id)
        if record is None or decide(record, deps.submit_deadline) != Reconcile(answer_lost=True):
            return None
        verdict, listed = await upstream_match(deps, record, answer_lost=True)
    except Exception:  # the delivery after the backoff reconciles
        log.debug("submitter: no look at once for %s", job.job_id, exc_info=True)
        return None
    if not isinstance(verdict, Adopt):
        return None
    log.info("submitter: job %s adopts upstream %s at once", job.job_id, verdict.upstream_id)
    return next((v for v in listed if v.id == verdict.upstream_id), None)


async def submit(deps: Deps, job: JobRecordV1, seen: int) -> None:
    """Create the job upstream as its record says, under the attempt after the `seen` ones
    (the count its decision read): a delivery that loses that claim to another comes back and
    decides again (it never acks the message the winner may still need)."""
    spec = job.spec
    try:
        image = await input_image(deps.inputs, spec.input_reference)
    except InputImageError as exc:
        await end(deps, job, "input_unavailable", str(exc))
        return
    source, problem = await source_video(deps, job)
    if problem is not None:  # nothing was sent: it never will be (no retry, no loop)
        await end(deps, job, "source_unavailable", problem)
        return
    began = time.monotonic()
    try:
        slot = await deps.rates.acquire(spec.model, job.job_id, spec.priority, RATE_SLOT_LEASE)
    except StoreConflictError as exc:  # the shared rate is very busy: waiting, not an error
        delay = random.uniform(0.5, 2.0)  # noqa: S311
        note_wait("rate_conflict", delay)
        raise NackMessage(delay=delay) from exc
    finally:
        note_wait("rate_state", time.monotonic() - began)
    if isinstance(slot, Wait):
        # No slot near: the job waits in the stream (no error, no budget spent).
        held_back(deps, spec.model, "shaping", slot.seconds)
        note_wait("rate_wait", slot.seconds)
        raise NackMessage(delay=slot.seconds)
    try:
        # A slot reserved for this job a few seconds ahead: keep the message (heartbeats run)
        # and go at its moment. A timer, not synchronisation.
        note_wait("slot_sleep", max(0.0, slot.at - time.time()))
        if slot.at > time.time():
            held_back(deps, spec.model, "shaping", slot.at - time.time())
        await asyncio.sleep(max(0.0, slot.at - time.time()))
        if not await claim_attempt(deps.jobs, job, seen):
            note_wait("claim_lost", ATTEMPT_LEASE_SECONDS)
            raise NackMessage(delay=ATTEMPT_LEASE_SECONDS)  # claimed elsewhere, or moved on
        video = await create(deps, job, image, seen + 1, source)
    finally:
        if slot.taken:  # a second delivery of a job holding a slot leaves it to the first
            began = time.monotonic()
            try:
                await deps.rates.release(spec.model, job.job_id)
            except Exception:  # its lease frees the slot later
                log.warning("submitter: slot of %s not released", job.job_id, exc_info=True)
            note_wait("rate_state", time.monotonic() - began)
    if video is not None:
        await recorded(deps, job, video.id, video.created_at)


async def create(
    deps: Deps,
    job: JobRecordV1,
    image: InputImage | None,
    attempt: int,
    source: str | None = None,
) -> UpstreamVideo | None:
    """The POST of attempt `attempt` (the record's spec; a remix, edit or extension from the
    upstream video `source`), under its lease; None when the job was ended for it."""
    spec = job.spec
    request = CreateVideo(
        spec.model, spec.size, spec.seconds, spec.prompt, job.job_id, image,
        kind=spec.kind, source_video_id=source,
    )  # fmt: skip
    try:
        async with attempt_lease(deps, job, attempt):
            began = time.monotonic()
            try:
                return await deps.provider.create(request)
            finally:
                note_wait("create_call", time.monotonic() - began)
    except ProviderRateLimited as exc:
        # Nothing was created, and waiting for capacity is not an error (no budget spent);
        # every replica slows down, as the upstream asked.
        began = time.monotonic()
        with contextlib.suppress(Exception):
            await deps.rates.throttle(spec.model, exc.retry_after_seconds)
        note_wait("rate_state", time.monotonic() - began)
        if await cancelled_instead(deps, job, attempt, CreateOutcome.REFUSED):
            return None
        try:
            if not await advance(deps.jobs, job, retry_submit, attempt=attempt):
                # Asked to cancel since the look above: the cancel still learns nothing was made.
                await ended_attempt(deps, job, attempt, CreateOutcome.REFUSED)
        except Exception:  # the lease runs out, and the next delivery reconciles instead
            log.warning("submitter: could not put %s back in line", job.job_id, exc_info=True)
        delay = rate_limit_delay(exc.retry_after_seconds)
        held_back(deps, spec.model, "upstream_429", delay)
        note_wait("create_429", delay, exc.retry_after_seconds)
        raise NackMessage(delay=delay) from exc
    except (ProviderRejected, ProviderNotFound) as exc:
        # Refused for good (400/401/403/404/422, moderation, a retired model): never retried.
        if await cancelled_instead(deps, job, attempt, CreateOutcome.REFUSED):
            return None
        await ended_attempt(deps, job, attempt, CreateOutcome.REFUSED)
        refused = rejection(exc.status, exc.code, exc.message, source=source)
        await end(deps, job, refused.reason, refused.detail)
        return None
    except Exception as exc:
        # Retried (an error counted); the next delivery acts by what the outcome recorded here
        # says. Unrecorded (a lost write), the lease runs out and it reconciles. A lost answer
        # is looked for at once first: the video it made is usually listed already.
        outcome = attempt_outcome(exc)
        if await cancelled_instead(deps, job, attempt, outcome):
            return None
        await ended_attempt(deps, job, attempt, outcome)
        if outcome is CreateOutcome.NO_ANSWER and (found := await found_at_once(deps, job)):
            return found
        raise


def held_back(deps: Deps, model: str, cause: str, seconds: float) -> None:
    """A create held back `seconds` by the rate shaping (`shaping`) or an upstream 429
    (`upstream_429`): clipline.rate_limit.waits and .wait."""
    labels = {"provider": deps.provider_name, "model": model, "cause": cause}
    metrics.RATE_LIMIT_WAITS.add(1, labels)
    metrics.RATE_LIMIT_WAIT.record(max(0.0, seconds), labels)


def attempt_outcome(exc: Exception) -> CreateOutcome:
    """What a create that raised `exc` says about the upstream. Anything not known to have
    stopped before the upstream (or to be its explicit 5xx) counts as a lost answer: a body
    that could not be read, a bug, an error in the lease beside the POST."""
    if isinstance(exc, ProviderNotSent):
        return CreateOutcome.NOT_SENT
    if isinstance(exc, ProviderServerError):
        return CreateOutcome.SERVER_ERROR
    return CreateOutcome.NO_ANSWER


async def ended_attempt(deps: Deps, event: JobRef, attempt: int, outcome: CreateOutcome) -> None:
    with contextlib.suppress(Exception):
        await advance(deps.jobs, event, end_attempt, attempt=attempt, outcome=outcome)


async def recorded(deps: Deps, event: JobRef, upstream_id: str, created_at: int | None) -> None:
    """The upstream job exists: index it, record it (with when the upstream says it created it),
    announce it (a fact: one id per job). A job asked to cancel meanwhile ends cancelled, with
    the upstream id as its sunk cost."""
    await deps.upstream.link(upstream_id, event)  # first: a webhook may come at once
    created = upstream_time(created_at)
    record = await advance(
        deps.jobs, event, mark_submitted, upstream_id=upstream_id, created_at=created
    )
    if record is not None:  # announced with the id on record (an earlier delivery's, if any)
        await deps.emit(submitted(record, record.upstream_id or upstream_id))
    elif not await cancel_job(deps.jobs, deps.emit, event, stage=SERVICE, upstream_id=upstream_id):
        log.warning("submitter: job %s ended before upstream %s was recorded on it",
                    event.job_id, upstream_id)  # fmt: skip


async def cancelled_instead(
    deps: Deps, event: JobRef, attempt: int, outcome: CreateOutcome
) -> bool:
    """A create that failed while its job was asked to cancel: record what it says of the
    upstream (the bill depends on it) and end the job cancelled, instead of retrying."""
    record = await deps.jobs.get(event.tenant, event.job_id)
    if record is None or record.status != JobStatus.CANCELLING:
        return False
    await ended_attempt(deps, event, attempt, outcome)
    return await cancel_job(deps.jobs, deps.emit, event, stage=SERVICE) is not None


async def end(deps: Deps, event: JobRef, reason: str, detail: str, how: str = "fail") -> None:
    await end_job(
        deps.jobs, deps.emit, event, reason=reason, detail=detail, stage=SERVICE,
        how="time_out" if how == "time_out" else "fail",
    )  # fmt: skip


async def claim_attempt(jobs: JobStore, job: JobRef, seen: int) -> bool:
    """Record `submitting` only if no other attempt started since the decision read the record
    (it still counts `seen` attempts, a number that only grows): of two deliveries that both
    decided to create, one creates and the other does not."""
    now = datetime.now(UTC)

    def change(record: JobRecordV1 | None) -> JobRecordV1 | None:
        if record is None or record.submit_attempts != seen:
            return None
        try:
            return begin_submit(record, now)
        except IllegalTransition:
            return None

    return await jobs.update(job.tenant, job.job_id, change) is not None


def attempt_lease(deps: Deps, job: JobRef, attempt: int) -> AbstractAsyncContextManager[None]:
    """Renew the attempt's lease on the record while the create runs, so a duplicate delivery
    elsewhere waits instead of reconciling (and creating) under a live attempt."""
    return periodically(
        ATTEMPT_LEASE_SECONDS / 3, lambda: advance(deps.jobs, job, renew_attempt, attempt=attempt)
    )


def decide(
    record: JobRecordV1 | None, deadline: float
) -> Submit | Reconcile | InFlight | Resend | Skip | Expired | Cancel:
    if record is None:
        return Skip()
    now = datetime.now(UTC)
    admitted_at = record.history.get(JobStatus.ADMITTED.value)
    alive_at = record.attempt_alive_at
    return plan(
        record.status.value, record.upstream_id, record.terminal,
        waited=(now - admitted_at).total_seconds() if admitted_at else 0.0, deadline=deadline,
        attempt_age=(now - alive_at).total_seconds() if alive_at else None,
        outcome=record.create_outcome.value if record.create_outcome else None,
    )  # fmt: skip


async def input_image(inputs: InputStore, ref: InputReference | None) -> InputImage | None:
    if ref is None:
        return None
    try:
        data = await inputs.get(ref.object_name)
    except InputMissingError as exc:
        raise InputImageError(f"input image {ref.object_name} is gone") from exc
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise InputImageError(f"input image {ref.object_name} does not match its sha256")
    extension = ref.content_type.split("/")[1].replace("jpeg", "jpg")
    return InputImage(data, ref.content_type, f"input_reference.{extension}")


async def source_video(deps: Deps, job: JobRecordV1) -> tuple[str | None, str | None]:
    """The upstream video a remix, edit or extension is made from, read from its SOURCE JOB'S
    record (never from an event), and why it cannot be sent (None: it can). A generate has
    neither."""
    spec = job.spec
    if spec.kind == "generate":
        return None, None
    found = await deps.jobs.get(job.tenant, spec.source_job_id) if spec.source_job_id else None
    upstream = found.upstream_id if found is not None else None
    if not is_valid_video_id(upstream):
        upstream = None
    return upstream, source_problem(spec.kind, spec.source_job_id, found is not None, upstream)


def upstream_time(epoch: int | None) -> datetime | None:
    """The upstream's `created_at` (epoch seconds) as a time; None when absent or absurd (a
    gateway's clock is not trusted past a day either way)."""
    if epoch is None or abs(epoch - time.time()) > 86400:
        return None
    return datetime.fromtimestamp(epoch, UTC)


def submitted(record: JobRecordV1, upstream_id: str) -> JobSubmittedV1:
    """The `submitted` fact, its copies of the facts from the record (never from an event)."""
    return JobSubmittedV1.fact(
        record, spec=record.spec, cost_micros=record.cost_micros or 0, upstream_id=upstream_id
    )

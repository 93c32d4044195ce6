"""Intake's use cases: take a request, refuse one, cancel a job, read a tenant's jobs. The NATS
consumer (handlers.py) and the HTTP API (http.py) both call these; the tenant is always the
caller's (the request subject's token, or the API key's), never a field of the request."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from services.intake.callbacks import url_problem
from services.intake.domain import (
    Conflict,
    Derived,
    Invalid,
    New,
    Repeat,
    Source,
    Valid,
    check_image,
    dedupe,
    derive,
    validate,
)
from services.intake.listing import GENERATE, NEVER, JobQuery, Position, Row, page
from services.intake.ports import Deps
from shared import metrics, moves
from shared.contracts import (
    InputReference,
    JobAcceptedV1,
    JobCancelRequestedV1,
    JobRecordV1,
    JobRejectedV1,
    JobSpec,
)
from shared.contracts.events import JOB_KINDS
from shared.contracts.ids import JOB_ID_RE, is_valid_tenant, job_id_for
from shared.contracts.lifecycle import STEPS, JobStatus, request_cancel
from shared.jobstore import request_hash
from shared.messaging import NO_TENANT
from shared.registry import ProviderSpec
from shared.telemetry import current_trace_id

SERVICE = "intake"
CANCELLABLE = STEPS["request_cancel"].sources


@dataclass(frozen=True, slots=True)
class Taken:
    """The request is this job (new, or the same request again)."""

    record: JobRecordV1
    new: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """The request was rejected (and the rejection announced), with its reason."""

    why: Invalid
    job_id: str


@dataclass(frozen=True, slots=True)
class _Job:
    job_id: str
    tenant: str


def job_id_of(tenant: str, idempotency_key: str | None, cause: str) -> str:
    """Requests without a key get one from their message, so a redelivery maps to the same job."""
    return job_id_for(tenant, idempotency_key or f"auto:{cause}")


async def take(
    deps: Deps,
    body: object,
    tenant: str,
    cause: str,
    *,
    announce: bool = True,
    request_id: str | None = None,
) -> Taken | Refused:
    """The whole intake decision for one request: the same rules for NATS and HTTP. A refusal
    is announced as a `rejected` event (naming `request_id` and the key) unless the caller
    answers it itself (HTTP)."""
    asked = asked_by(body, request_id)
    decision: Valid | Derived | Invalid = validate(body, tenant, deps.provider)
    if isinstance(decision, Derived):
        decision = derive(decision, await source_of(deps, tenant, decision.source_job_id))
    if isinstance(decision, Valid):
        decision = await check_input_image(deps, decision) or decision
    if isinstance(decision, Valid):
        decision = await check_callback(deps, decision) or decision
    if isinstance(decision, Invalid):
        return await refuse(deps, tenant, cause, decision, asked, announce=announce, body=body)
    key = decision.idempotency_key or f"auto:{cause}"
    job_id = job_id_for(tenant, key)
    spec = await _spec(deps, decision)
    fingerprint = request_hash(decision.fingerprint)
    fresh = JobRecordV1(
        job_id=job_id, tenant=tenant, status=JobStatus.ACCEPTED, spec=spec,
        idempotency_key=key, request_hash=fingerprint, trace_id=current_trace_id(),
        history={JobStatus.ACCEPTED.value: datetime.now(UTC)},
        callback_url=decision.callback_url,
    )  # fmt: skip
    seen: list[JobRecordV1 | None] = []

    def create(current: JobRecordV1 | None) -> JobRecordV1 | None:
        seen[:] = [current]  # the last read wins: compare-and-set retries re-run this
        return fresh if current is None else None

    created = await deps.jobs.update(tenant, job_id, create, fresh=True)  # a new job: no read
    existing = created or seen[0]
    assert existing is not None  # written by us, or read by us
    match dedupe(None if created else existing.request_hash, fingerprint):
        case Conflict(detail=detail):
            conflict = Invalid("idempotency_conflict", f"{detail} (job {job_id})")
            return await refuse(deps, tenant, cause, conflict, asked, announce=announce, body=body)
        case New() | Repeat():
            # Announced again only while nothing downstream has taken it (the fact's id
            # deduplicates a repeat); later, the record tells its state.
            if existing.status == JobStatus.ACCEPTED:
                await deps.emit(
                    JobAcceptedV1.fact(existing, spec=existing.spec, idempotency_key=key)
                )
            return Taken(existing, new=created is not None)


async def source_of(deps: Deps, tenant: str, job_id: str) -> Source | None:
    """The source job of a remix, edit or extension: only ever one of `tenant`'s own (another
    tenant's job is not found, whatever its id)."""
    record = await find(deps, tenant, job_id)
    if record is None:
        return None
    spec = record.spec
    return Source(
        job_id=record.job_id, status=record.status.value, model=spec.model, size=spec.size,
        video_seconds=spec.video_seconds, extensions=spec.extensions,
    )  # fmt: skip


async def check_input_image(deps: Deps, valid: Valid) -> Invalid | None:
    """Decoding is done by validate(); here the bytes are checked to be what they claim."""
    image = valid.spec.image
    if image is None:
        return None
    facts = await asyncio.to_thread(deps.probe, image.data)
    return check_image(image, facts, valid.spec.size)


async def check_callback(deps: Deps, valid: Valid) -> Invalid | None:
    """A callback_url must be one the sender may POST to, and its tenant must have a signing
    secret (docs/webhooks.md): refused now rather than never delivered."""
    url = valid.callback_url
    if url is None:
        return None
    field = "callback_url"
    if deps.callbacks is None:
        return Invalid("callbacks_unavailable", "this deployment sends no webhooks", field)
    problem = url_problem(url, deps.callbacks.allow_private)
    if problem is not None:
        return Invalid("invalid_callback_url", problem, field)
    if await deps.callbacks.store.endpoint(valid.tenant) is None:
        return Invalid(
            "callbacks_not_configured",
            f"tenant {valid.tenant} has no webhook signing secret yet: an admin sets one with "
            "`clipline webhooks set TENANT`",
            field,
        )
    return None


async def _spec(deps: Deps, valid: Valid) -> JobSpec:
    """The contract spec; an input image goes to the object store and the spec references it.

    Images are named by tenant and content hash, so a conflicting request can never replace the
    image of an existing job, and storing the same image again changes nothing."""
    s = valid.spec
    reference = None
    if s.image is not None:
        digest = hashlib.sha256(s.image.data).hexdigest()
        name = f"{valid.tenant}/{digest}"
        await deps.inputs.put(name, s.image.data)
        reference = InputReference(
            object_name=name,
            content_type=s.image.declared_type,
            size_bytes=len(s.image.data),
            sha256=digest,
        )
    return JobSpec(
        model=s.model, size=s.size, seconds=s.seconds, prompt=s.prompt, input_reference=reference,
        priority=s.priority, kind=s.kind, source_job_id=s.source_job_id,
        total_seconds=s.total_seconds, extensions=s.extensions,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Asked:
    """How the requester will look for the answer: its message id and idempotency key."""

    request_id: str | None = None
    idempotency_key: str | None = None


def asked_by(body: object, request_id: str | None) -> Asked:
    named = body.get("idempotency_key") if isinstance(body, dict) else None
    return Asked(request_id, named if isinstance(named, str) and 0 < len(named) <= 255 else None)


def refusal_labels(
    provider: ProviderSpec, body: object, tenant: str, reason: str
) -> dict[str, str]:
    """A request refused at the edge is a job that went straight to `rejected` (from_state
    '', as a new job): counted in clipline.job.transitions like every other move, with the
    model and kind it asked for only when they are ones clipline knows (labels stay bounded:
    a request can name anything)."""
    asked = body if isinstance(body, dict) else {}
    model = asked.get("model")
    kind = asked.get("kind", "generate")
    known = provider.model(model) if isinstance(model, str) else None
    return {
        "from_state": "",
        "to_state": JobStatus.REJECTED.value,
        "tenant": tenant if is_valid_tenant(tenant) else NO_TENANT,
        "provider": moves.provider(),
        "model": known.name if known is not None else "",
        "kind": kind if isinstance(kind, str) and kind in JOB_KINDS else "",
        "reason": reason,
    }


async def refuse(
    deps: Deps,
    tenant: str,
    cause: str,
    why: Invalid,
    asked: Asked = Asked(),
    *,
    announce: bool = True,
    body: object = None,
) -> Refused:
    """A rejected request, under a job id of its own message. Its event's id derives from that
    message (it is not a fact of any job), so a redelivered request is rejected once."""
    job = _Job(job_id_of(tenant or NO_TENANT, None, cause), tenant or NO_TENANT)
    metrics.JOB_TRANSITIONS.add(1, refusal_labels(deps.provider, body, job.tenant, why.reason))
    if announce:
        await deps.emit(
            JobRejectedV1.caused_by(
                cause,
                job,
                reason=why.reason,
                detail=why.detail,
                stage=SERVICE,
                request_id=asked.request_id,
                idempotency_key=asked.idempotency_key,
            )
        )
    return Refused(why, job.job_id)


@dataclass(frozen=True, slots=True)
class Cancelling:
    """The job is (now, or already) asked to cancel, or already cancelled: `record` says."""

    record: JobRecordV1
    new: bool


@dataclass(frozen=True, slots=True)
class AlreadyEnded:
    """The job ended otherwise (completed, failed, ...): there is nothing left to cancel."""

    record: JobRecordV1


async def cancel(deps: Deps, tenant: str, job_id: str) -> Cancelling | AlreadyEnded | None:
    """Ask to cancel a job of `tenant` (None: no such job). Recorded `cancelling` by
    compare-and-set, then `cancel_requested` announced (again for a job already cancelling:
    a repeat whose first announcement was lost; the fact's id drops a duplicate), so the
    job ends at once wherever it waits."""
    now = datetime.now(UTC)

    def ask(record: JobRecordV1 | None) -> JobRecordV1 | None:
        if record is None or record.status not in CANCELLABLE:
            return None
        return request_cancel(record, now)

    asked = await deps.jobs.update(tenant, job_id, ask)
    record = asked or await deps.jobs.get(tenant, job_id)
    if record is None:
        return None
    if record.status == JobStatus.CANCELLING:
        await deps.emit(JobCancelRequestedV1.fact(record))
    elif record.status != JobStatus.CANCELLED:
        return AlreadyEnded(record)
    return Cancelling(record, new=asked is not None)


async def find(deps: Deps, tenant: str, job_id: str) -> JobRecordV1 | None:
    """A job of `tenant` (None: no such job there, whatever other tenants have)."""
    return await deps.jobs.get(tenant, job_id) if JOB_ID_RE.fullmatch(job_id) else None


def row_of(record: JobRecordV1) -> Row:
    """What listing looks at of a record. A record names no kind until remix, edit and extend
    exist: read one where it may come (the record, then the spec), else `generate`."""
    kind = getattr(record, "kind", None) or getattr(record.spec, "kind", None) or GENERATE
    accepted = record.history.get(JobStatus.ACCEPTED.value) or NEVER
    return Row(record.job_id, record.status.value, str(kind), record.spec.model, accepted)


async def jobs_of(
    deps: Deps, tenant: str, query: JobQuery
) -> tuple[list[JobRecordV1], Position | None]:
    """One page of `tenant`'s jobs matching `query`, newest first, and where the next starts."""
    records = {r.job_id: r for r in await deps.jobs.list(tenant)}
    found = page((row_of(r) for r in records.values()), query)
    return [records[row.job_id] for row in found.rows], found.next

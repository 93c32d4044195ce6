"""Intake handlers: decode -> validate -> record (idempotent) -> emit accepted or rejected."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

from faststream.nats.annotations import NatsMessage

from services.intake.adapters import probe_image
from services.intake.domain import (
    Conflict,
    Invalid,
    New,
    Repeat,
    Valid,
    check_image,
    decode,
    dedupe,
    validate,
)
from shared.contracts import (
    REQUEST_SUBJECT_PREFIX,
    InputReference,
    JobAcceptedV1,
    JobRecordV1,
    JobRejectedV1,
    JobSpec,
    JobStatus,
)
from shared.contracts.ids import derived_event_id, job_id_for
from shared.jobstore import request_hash
from shared.messaging import ServiceRouter
from shared.registry import Registry
from shared.runtime import Runtime
from shared.telemetry import current_trace_id

SERVICE = "intake"
DURABLE = "intake--job-requested-v1"


def tenant_of(subject: str) -> str:
    """clipline.job.requested.v1.<tenant>[.<anything>] -> <tenant> ('' if absent)."""
    rest = subject.removeprefix(REQUEST_SUBJECT_PREFIX + ".")
    return "" if rest == subject else rest.split(".", 1)[0]


def job_id_of(tenant: str, idempotency_key: str | None, cause: str) -> str:
    """Requests without a key get one from their message, so a redelivery maps to the same job."""
    return job_id_for(tenant, idempotency_key or f"auto:{cause}")


async def take_request(
    rt: Runtime, registry: Registry, raw: bytes, tenant: str, cause: str
) -> None:
    """The whole intake decision for one request message."""
    now = datetime.now(UTC)
    decision = validate(decode(raw), tenant, registry)
    if isinstance(decision, Invalid):
        await reject(rt, tenant or "unknown", job_id_of(tenant, None, cause), decision, cause)
        return
    job_id = job_id_of(tenant, decision.idempotency_key, cause)
    image = await check_input_image(decision)
    if image is not None:
        await reject(rt, tenant, job_id, image, cause)
        return
    spec = await _spec(rt, decision)
    fingerprint = request_hash(decision.fingerprint)
    key = decision.idempotency_key or f"auto:{cause}"
    outcome: list[New | Repeat | Conflict] = []

    def record(current: JobRecordV1 | None) -> JobRecordV1 | None:
        outcome[:] = [dedupe(current.request_hash if current else None, fingerprint)]
        if current is not None:
            return None
        return JobRecordV1(
            job_id=job_id,
            tenant=tenant,
            status=JobStatus.ACCEPTED,
            spec=spec,
            idempotency_key=key,
            request_hash=fingerprint,
            trace_id=current_trace_id(),
            history={JobStatus.ACCEPTED.value: now},
        )

    await rt.jobs.update(job_id, record)
    match outcome[0]:
        case New() | Repeat():
            # A retry announces the job again only while nothing downstream has taken it yet;
            # later, the record already tells its state and a re-run would duplicate work.
            current = await rt.jobs.get(job_id)
            if current is None or current.status != JobStatus.ACCEPTED:
                return
            await rt.emit(
                JobAcceptedV1(
                    event_id=derived_event_id(job_id, "accepted"),
                    occurred_at=now,
                    job_id=job_id,
                    tenant=tenant,
                    spec=current.spec,
                    idempotency_key=key,
                )
            )
        case Conflict(detail=detail):
            conflict = Invalid("idempotency_conflict", f"{detail} (job {job_id})")
            await reject(rt, tenant, job_id_of(tenant, None, cause), conflict, cause)


async def check_input_image(valid: Valid) -> Invalid | None:
    """Decoding is done by validate(); here the bytes are checked to be what they claim."""
    image = valid.spec.image
    if image is None:
        return None
    facts = await asyncio.to_thread(probe_image, image.data)
    return check_image(image, facts, valid.spec.size)


async def _spec(rt: Runtime, valid: Valid) -> JobSpec:
    """The contract spec; an input image goes to the object store and the spec references it.

    Images are named by tenant and content hash, so a conflicting request can never replace the
    image of an existing job, and storing the same image again changes nothing."""
    s = valid.spec
    reference = None
    if s.image is not None:
        digest = hashlib.sha256(s.image.data).hexdigest()
        name = f"{valid.tenant}/{digest}"
        await rt.inputs.put(name, s.image.data)
        reference = InputReference(
            object_name=name,
            content_type=s.image.declared_type,
            size_bytes=len(s.image.data),
            sha256=digest,
        )
    return JobSpec(
        model=s.model, size=s.size, seconds=s.seconds, prompt=s.prompt, input_reference=reference
    )


async def reject(rt: Runtime, tenant: str, job_id: str, why: Invalid, cause: str) -> None:
    await rt.emit(
        JobRejectedV1(
            event_id=derived_event_id(cause, "rejected"),
            occurred_at=datetime.now(UTC),
            job_id=job_id,
            tenant=tenant,
            reason=why.reason,
            detail=why.detail,
            stage=SERVICE,
        )
    )


def build_router(rt: Runtime, registry: Registry) -> ServiceRouter:
    router = rt.router()

    @router.on_subject(f"{REQUEST_SUBJECT_PREFIX}.>", DURABLE)
    async def on_job_requested(msg: NatsMessage) -> None:
        raw = msg.raw_message
        tenant = tenant_of(raw.subject)
        msg_id = msg.headers.get("Nats-Msg-Id") or f"seq:{raw.metadata.sequence.stream}"
        await take_request(rt, registry, msg.body, tenant, f"{tenant}:{msg_id}")

    return router

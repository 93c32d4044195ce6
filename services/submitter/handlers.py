"""submitter handlers: create admitted jobs upstream, once, within bounded retries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from faststream.exceptions import NackMessage

from services.submitter.domain import Expired, Resend, Skip, Submit, plan, rate_limit_delay
from shared.contracts import (
    InputReference,
    JobAdmittedV1,
    JobRecordV1,
    JobStatus,
    JobSubmittedV1,
)
from shared.inputs import InputMissingError
from shared.messaging import ServiceRouter
from shared.provider import (
    CreateVideo,
    InputImage,
    ProviderRateLimited,
    ProviderRejected,
    VideoProvider,
)
from shared.runtime import Runtime

SERVICE = "submitter"


class InputImageError(Exception):
    """The job's input image is missing or not the one that was validated."""


def build_router(
    rt: Runtime, provider: VideoProvider, max_attempts: int, deadline: float
) -> ServiceRouter:
    router = rt.router()

    async def fail(event: JobAdmittedV1, reason: str, detail: str) -> None:
        await rt.fail(
            job_id=event.job_id, tenant=event.tenant, cause_id=event.event_id,
            reason=reason, detail=detail, stage=SERVICE,
        )  # fmt: skip

    @router.on(JobAdmittedV1, max_errors=max_attempts, batch_size=16, max_workers=16)
    async def on_job_admitted(event: JobAdmittedV1) -> None:
        record = await rt.jobs.get(event.job_id)
        match decide(record, deadline):
            case Skip():
                return
            case Resend(upstream_id=upstream_id):
                await rt.emit(submitted(event, upstream_id))
                return
            case Expired(detail=detail):
                await fail(event, "submit_timeout", detail)
                return
            case Submit():
                pass
        spec = event.spec
        try:
            image = await input_image(rt, spec.input_reference)
        except InputImageError as exc:
            await fail(event, "input_unavailable", str(exc))
            return
        request = CreateVideo(spec.model, spec.size, spec.seconds, spec.prompt, event.job_id, image)
        try:
            video = await provider.create(request)
        except ProviderRateLimited as exc:
            # Waiting for capacity is not an error: it does not spend the retry budget.
            raise NackMessage(delay=rate_limit_delay(exc.retry_after_seconds)) from exc
        except ProviderRejected as exc:
            await fail(event, "upstream_rejected", f"{exc.status}: {exc.message}")
            return
        if await rt.advance(event.job_id, JobStatus.SUBMITTED, upstream_id=video.id):
            await rt.emit(submitted(event, video.id))

    return router


def decide(record: JobRecordV1 | None, deadline: float) -> Submit | Resend | Skip | Expired:
    if record is None:
        return Skip()
    admitted_at = record.history.get(JobStatus.ADMITTED.value)
    waited = (datetime.now(UTC) - admitted_at).total_seconds() if admitted_at else 0.0
    return plan(
        record.status.value, record.upstream_id, record.terminal, waited=waited, deadline=deadline
    )


async def input_image(rt: Runtime, ref: InputReference | None) -> InputImage | None:
    if ref is None:
        return None
    try:
        data = await rt.inputs.get(ref.object_name)
    except InputMissingError as exc:
        raise InputImageError(f"input image {ref.object_name} is gone") from exc
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise InputImageError(f"input image {ref.object_name} does not match its sha256")
    extension = ref.content_type.split("/")[1].replace("jpeg", "jpg")
    return InputImage(data, ref.content_type, f"input_reference.{extension}")


def submitted(event: JobAdmittedV1, upstream_id: str) -> JobSubmittedV1:
    return JobSubmittedV1.caused_by(
        event, spec=event.spec, cost_micros=event.cost_micros, upstream_id=upstream_id
    )

"""submitter handlers: create admitted jobs upstream, recording `submitting` before the POST."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from faststream import Context
from faststream.exceptions import NackMessage

from services.submitter.domain import Expired, Resend, Skip, Submit, plan, rate_limit_delay
from services.submitter.ports import Deps
from shared.contracts import InputReference, JobAdmittedV1, JobRecordV1, JobSubmittedV1
from shared.contracts.lifecycle import JobStatus, begin_submit, mark_submitted
from shared.inputs import InputMissingError, InputStore
from shared.jobstore import advance
from shared.messaging import ServiceRouter, end_job
from shared.provider import CreateVideo, InputImage, ProviderRateLimited, ProviderRejected

SERVICE = "submitter"


class InputImageError(Exception):
    """The job's input image is missing or not the one that was validated."""


def build_router(max_attempts: int) -> ServiceRouter:
    router = ServiceRouter(SERVICE, emits=[JobSubmittedV1])

    @router.on(JobAdmittedV1, max_errors=max_attempts, max_workers=16)
    async def on_job_admitted(event: JobAdmittedV1, deps: Annotated[Deps, Context("deps")]) -> None:
        record = await deps.jobs.get(event.tenant, event.job_id)
        match decide(record, deps.submit_deadline):
            case Skip():
                return
            case Resend(upstream_id=upstream_id):
                await deps.emit(submitted(event, upstream_id))
            case Expired(detail=detail):
                await end(deps, event, "submit_timeout", detail, how="time_out")
            case Submit():
                await submit(deps, event)

    return router


async def submit(deps: Deps, event: JobAdmittedV1) -> None:
    spec = event.spec
    try:
        image = await input_image(deps.inputs, spec.input_reference)
    except InputImageError as exc:
        await end(deps, event, "input_unavailable", str(exc))
        return
    if not await advance(deps.jobs, event, begin_submit):
        return  # moved on or ended meanwhile (another replica, a cancel)
    request = CreateVideo(spec.model, spec.size, spec.seconds, spec.prompt, event.job_id, image)
    try:
        video = await deps.provider.create(request)
    except ProviderRateLimited as exc:
        # Waiting for capacity is not an error: it does not spend the retry budget.
        raise NackMessage(delay=rate_limit_delay(exc.retry_after_seconds)) from exc
    except ProviderRejected as exc:
        await end(deps, event, "upstream_rejected", f"{exc.status}: {exc.message}")
        return
    await deps.upstream.link(video.id, event)  # before the record: a webhook may come at once
    if await advance(deps.jobs, event, mark_submitted, upstream_id=video.id):
        await deps.emit(submitted(event, video.id))


async def end(
    deps: Deps, event: JobAdmittedV1, reason: str, detail: str, how: str = "fail"
) -> None:
    await end_job(
        deps.jobs, deps.emit, event, reason=reason, detail=detail, stage=SERVICE,
        how="time_out" if how == "time_out" else "fail",
    )  # fmt: skip


def decide(record: JobRecordV1 | None, deadline: float) -> Submit | Resend | Skip | Expired:
    if record is None:
        return Skip()
    admitted_at = record.history.get(JobStatus.ADMITTED.value)
    waited = (datetime.now(UTC) - admitted_at).total_seconds() if admitted_at else 0.0
    return plan(
        record.status.value, record.upstream_id, record.terminal, waited=waited, deadline=deadline
    )


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


def submitted(event: JobAdmittedV1, upstream_id: str) -> JobSubmittedV1:
    return JobSubmittedV1.fact(
        event, spec=event.spec, cost_micros=event.cost_micros, upstream_id=upstream_id
    )

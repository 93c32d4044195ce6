"""submitter handlers: create admitted jobs upstream, once, within bounded retries."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.exceptions import NackMessage

from services.submitter.domain import Resend, Skip, Submit, plan, rate_limit_delay
from shared.contracts import (
    InputReference,
    JobAdmittedV1,
    JobFailedV1,
    JobStatus,
    JobSubmittedV1,
    transition,
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


def build_router(rt: Runtime, provider: VideoProvider, max_attempts: int) -> ServiceRouter:
    router = rt.router()

    @router.on(JobAdmittedV1, max_deliver=max_attempts, batch_size=16, max_workers=16)
    async def on_job_admitted(event: JobAdmittedV1) -> None:
        record = await rt.jobs.get(event.job_id)
        match plan(record.status if record else None,
                   record.upstream_id if record else None,
                   bool(record and record.terminal)):  # fmt: skip
            case Skip():
                return
            case Resend(upstream_id=upstream_id):
                await rt.emit(submitted(event, upstream_id))
                return
            case Submit():
                pass
        spec = event.spec
        try:
            image = await input_image(rt, spec.input_reference)
        except InputMissingError:
            await fail(rt, event, "input_missing", "the job's input_reference image is gone")
            return
        request = CreateVideo(spec.model, spec.size, spec.seconds, spec.prompt, event.job_id, image)
        try:
            video = await provider.create(request)
        except ProviderRateLimited as exc:
            raise NackMessage(delay=rate_limit_delay(exc.retry_after_seconds)) from exc
        except ProviderRejected as exc:
            await fail(rt, event, "upstream_rejected", f"{exc.status}: {exc.message}")
            return
        now = datetime.now(UTC)
        await rt.jobs.update(
            event.job_id,
            lambda r: r and transition(r, JobStatus.SUBMITTED, now, upstream_id=video.id),
        )
        await rt.emit(submitted(event, video.id))

    return router


async def input_image(rt: Runtime, ref: InputReference | None) -> InputImage | None:
    if ref is None:
        return None
    data = await rt.inputs.get(ref.object_name)
    extension = ref.content_type.split("/")[1].replace("jpeg", "jpg")
    return InputImage(data, ref.content_type, f"input_reference.{extension}")


def submitted(event: JobAdmittedV1, upstream_id: str) -> JobSubmittedV1:
    return JobSubmittedV1.caused_by(
        event, spec=event.spec, cost_micros=event.cost_micros, upstream_id=upstream_id
    )


async def fail(rt: Runtime, event: JobAdmittedV1, reason: str, detail: str) -> None:
    now = datetime.now(UTC)
    await rt.jobs.update(
        event.job_id,
        lambda r: r and transition(r, JobStatus.FAILED, now, reason=reason, detail=detail),
    )
    await rt.emit(JobFailedV1.caused_by(event, reason=reason, detail=detail, stage=SERVICE))

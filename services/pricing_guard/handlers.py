"""pricing_guard handlers: price accepted jobs; settle or release when jobs end."""

from __future__ import annotations

from services.pricing_guard.domain import Admitted, Refused, final_charge, price
from shared.contracts import (
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobFailedV1,
    JobRejectedV1,
    JobStatus,
)
from shared.contracts.jobs import settle
from shared.messaging import ServiceRouter
from shared.registry import Registry
from shared.runtime import Runtime

SERVICE = "pricing_guard"


def build_router(rt: Runtime, registry: Registry) -> ServiceRouter:
    router = rt.router()

    @router.on(JobAcceptedV1)
    async def on_job_accepted(event: JobAcceptedV1) -> None:
        spec = event.spec
        match price(registry, spec.model, spec.size, spec.seconds):
            case Admitted(cost_micros=cost):
                if await rt.advance(event.job_id, JobStatus.ADMITTED, cost_micros=cost):
                    await rt.emit(JobAdmittedV1.caused_by(event, spec=spec, cost_micros=cost))
            case Refused(reason=reason, detail=detail):
                if await rt.advance(event.job_id, JobStatus.REJECTED, reason=reason, detail=detail):
                    await rt.emit(
                        JobRejectedV1.caused_by(event, reason=reason, detail=detail, stage=SERVICE)
                    )

    @router.on(JobCompletedV1)
    async def on_job_completed(event: JobCompletedV1) -> None:
        charge = final_charge(True, event.cost_micros)
        await rt.jobs.update(event.job_id, lambda r: r and settle(r, charge))

    @router.on(JobFailedV1)
    async def on_job_failed(event: JobFailedV1) -> None:
        await rt.jobs.update(event.job_id, lambda r: r and settle(r, final_charge(False, None)))

    return router

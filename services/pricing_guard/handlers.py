"""pricing_guard handlers: price accepted jobs; settle or release when jobs end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from faststream import Context

from services.pricing_guard.domain import Admitted, Refused, final_charge, price
from shared.contracts import (
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobFailedV1,
    JobRecordV1,
    JobRejectedV1,
)
from shared.contracts.events import JobRef
from shared.contracts.lifecycle import IllegalTransition, admit, reject, settle
from shared.jobstore import JobStore, advance
from shared.messaging import ServiceRouter
from shared.outcomes import Emit, announce_end
from shared.registry import ProviderSpec

SERVICE = "pricing_guard"
Jobs = Annotated[JobStore, Context("deps.jobs")]
Emitter = Annotated[Emit, Context("deps.emit")]
Prices = Annotated[ProviderSpec, Context("deps.provider")]


def build_router() -> ServiceRouter:
    router = ServiceRouter(SERVICE, emits=[JobAdmittedV1, JobRejectedV1])

    @router.on(JobAcceptedV1)
    async def on_job_accepted(
        event: JobAcceptedV1, jobs: Jobs, emit: Emitter, registry: Prices
    ) -> None:
        record = await jobs.get(event.tenant, event.job_id)
        if record is not None and record.terminal:
            await announce_end(emit, record, SERVICE)  # a refusal whose event may be lost
            return
        spec = event.spec
        match price(registry, spec.model, spec.size, spec.seconds, today=datetime.now(UTC).date()):
            case Admitted(cost_micros=cost):
                if await advance(jobs, event, admit, cost_micros=cost):
                    await emit(JobAdmittedV1.fact(event, spec=spec, cost_micros=cost))
            case Refused(reason=reason, detail=detail):
                if await advance(jobs, event, reject, reason=reason, detail=detail, stage=SERVICE):
                    await emit(
                        JobRejectedV1.fact(event, reason=reason, detail=detail, stage=SERVICE)
                    )

    @router.on(JobCompletedV1)
    async def on_job_completed(event: JobCompletedV1, jobs: Jobs) -> None:
        await settle_job(jobs, event, final_charge(True, event.cost_micros))

    @router.on(JobFailedV1)
    async def on_job_failed(event: JobFailedV1, jobs: Jobs) -> None:
        await settle_job(jobs, event, final_charge(False, None))

    return router


async def settle_job(jobs: JobStore, job: JobRef, charged_micros: int) -> None:
    """Write the final charge once; a redelivery (already settled) changes nothing."""

    def change(record: JobRecordV1 | None) -> JobRecordV1 | None:
        if record is None:
            return None
        try:
            return settle(record, charged_micros=charged_micros)
        except IllegalTransition:
            return None

    await jobs.update(job.tenant, job.job_id, change)

"""pricing_guard handlers: price and reserve accepted jobs; settle every job that ends."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from faststream import Context

from services.pricing_guard.budgets import Exceeded, Settlement
from services.pricing_guard.domain import Admitted, Ending, Refused, bill, price
from services.pricing_guard.ports import BudgetStore, Claim, Reserved
from services.pricing_guard.records import ReservationRecord
from shared.contracts import (
    BudgetAlertV1,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobFailedV1,
    JobRecordV1,
    JobRejectedV1,
    JobTimedOutV1,
)
from shared.contracts.events import Event
from shared.contracts.lifecycle import IllegalTransition, admit, reject, settle
from shared.jobstore import JobStore, advance
from shared.messaging import ServiceRouter
from shared.outcomes import Emit, announce_end
from shared.registry import ProviderSpec

SERVICE = "pricing_guard"
log = logging.getLogger("clipline.pricing_guard")
Jobs = Annotated[JobStore, Context("deps.jobs")]
Emitter = Annotated[Emit, Context("deps.emit")]
Prices = Annotated[ProviderSpec, Context("deps.provider")]
Budgets = Annotated[BudgetStore, Context("deps.budgets")]


def build_router() -> ServiceRouter:
    router = ServiceRouter(SERVICE, emits=[JobAdmittedV1, JobRejectedV1, BudgetAlertV1])

    @router.on(JobAcceptedV1)
    async def on_job_accepted(
        event: JobAcceptedV1, jobs: Jobs, emit: Emitter, provider: Prices, budgets: Budgets
    ) -> None:
        record = await jobs.get(event.tenant, event.job_id)
        if record is not None and record.terminal:
            await announce_end(emit, record, SERVICE)  # a refusal whose event may be lost
            return
        spec = event.spec
        now = datetime.now(UTC)
        match price(provider, spec.model, spec.size, spec.seconds, today=now.date()):
            case Admitted(cost_micros=cost):
                claim = Claim(
                    event.tenant, event.job_id, spec.model, spec.size, spec.seconds, cost, now
                )
                match await budgets.reserve(claim):
                    case Reserved(reservation=reservation) if reservation.state == "reserved":
                        await admitted(jobs, emit, event, reservation)
                    case Reserved():
                        pass  # the job ended (and was settled) while this admission ran
                    case Exceeded() as over:
                        await refuse(jobs, emit, event, "budget_exceeded", over.detail)
            case Refused(reason=reason, detail=detail):
                await refuse(jobs, emit, event, reason, detail)

    @router.on(JobCompletedV1)
    async def on_job_completed(event: JobCompletedV1, jobs: Jobs, budgets: Budgets) -> None:
        await settle_job(jobs, budgets, event)

    @router.on(JobFailedV1)
    async def on_job_failed(event: JobFailedV1, jobs: Jobs, budgets: Budgets) -> None:
        await settle_job(jobs, budgets, event)

    @router.on(JobTimedOutV1)
    async def on_job_timed_out(event: JobTimedOutV1, jobs: Jobs, budgets: Budgets) -> None:
        await settle_job(jobs, budgets, event)

    return router


async def admitted(
    jobs: JobStore, emit: Emit, event: JobAcceptedV1, reservation: ReservationRecord
) -> None:
    """Reserved: record and announce the admission, and any soft threshold it crossed (again
    on a redelivery: the events' ids make the repeats droppable)."""
    cost = reservation.estimate_micros
    if await advance(jobs, event, admit, cost_micros=cost):
        await emit(JobAdmittedV1.fact(event, spec=event.spec, cost_micros=cost))
    for alert in reservation.alerts:
        cause = f"budget:{alert.scope}:{alert.period}:{alert.window}"
        await emit(
            BudgetAlertV1.caused_by(cause, event, key=str(alert.crossing), **alert.model_dump())
        )


async def refuse(
    jobs: JobStore, emit: Emit, event: JobAcceptedV1, reason: str, detail: str
) -> None:
    if await advance(jobs, event, reject, reason=reason, detail=detail, stage=SERVICE):
        await emit(JobRejectedV1.fact(event, reason=reason, detail=detail, stage=SERVICE))


async def settle_job(jobs: JobStore, budgets: BudgetStore, event: Event) -> None:
    """Settle the job's reservation by the billing policy, then write the charge on the job
    record. Both are idempotent, so a redelivery (or a crash between them) changes nothing."""
    record = await jobs.get(event.tenant, event.job_id)
    if record is None or not record.terminal:
        log.warning("%s: %s ended but its record says otherwise", SERVICE, event.job_id)
        return

    def billed(reservation: ReservationRecord) -> Settlement:
        return bill(ending(record, reservation))

    settled = await budgets.settle(
        event.tenant, event.job_id, billed, record.status.value, datetime.now(UTC)
    )
    if settled.reservation.charged_micros is None:
        return  # disputed: no final charge until it is resolved
    await write_charge(jobs, event, settled.reservation.charged_micros)


def ending(record: JobRecordV1, reservation: ReservationRecord) -> Ending:
    return Ending(
        status=record.status.value,
        reason=record.reason,
        stage=record.stage,
        reached=frozenset(record.history),
        estimate_micros=reservation.estimate_micros,
        requested_seconds=reservation.seconds,
        produced_seconds=record.produced_seconds,
    )


async def write_charge(jobs: JobStore, job: Event | JobRecordV1, charged_micros: int) -> None:
    """The final charge on the job record, written once."""

    def change(record: JobRecordV1 | None) -> JobRecordV1 | None:
        if record is None:
            return None
        try:
            return settle(record, charged_micros=charged_micros)
        except IllegalTransition:
            return None

    await jobs.update(job.tenant, job.job_id, change)

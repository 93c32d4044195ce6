"""pricing_guard use cases: admit a job by its record, settle the reservation of a job that
ended, sweep lost settlements; called by the event handlers, the sweeper and the admin API."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from services.pricing_guard.budgets import Alert, Exceeded, Settlement
from services.pricing_guard.domain import Admitted, Ending, Refused, bill, price
from services.pricing_guard.observe import (
    count_reserved,
    count_settled,
    note_admitted,
    note_refused,
)
from services.pricing_guard.ports import BudgetStore, Claim, Reserved
from services.pricing_guard.records import ReservationRecord
from shared.contracts import (
    BudgetAlertV1,
    JobAcceptedV1,
    JobAdmittedV1,
    JobRecordV1,
    JobRejectedV1,
)
from shared.contracts.events import JobRef
from shared.contracts.lifecycle import IllegalTransition, JobStatus, admit, reject, settle
from shared.jobstore import JobStore, advance
from shared.outcomes import Emit, cancel_job
from shared.registry import ProviderSpec

SERVICE = "pricing_guard"
log = logging.getLogger("clipline.pricing_guard")
CANCELLED_BEFORE = "cancelled before admission; nothing went upstream"


async def admit_job(
    jobs: JobStore,
    emit: Emit,
    provider: ProviderSpec,
    budgets: BudgetStore,
    *,
    record: JobRecordV1,
    event: JobAcceptedV1,
) -> None:
    """Price the job by its record's spec (never the event's copy), reserve that much of its
    budgets, and admit or refuse it. A reservation an earlier delivery made is carried out
    as it was decided."""
    earlier = await budgets.reservation(record.tenant, record.job_id)
    if earlier is not None:  # decided by an earlier delivery: carry that decision out
        await carry_out(jobs, emit, record, event, earlier)
        return
    spec = record.spec
    now = datetime.now(UTC)
    match price(provider, spec.model, spec.size, spec.seconds, today=now.date()):
        case Admitted(cost_micros=cost):
            claim = Claim(
                record.tenant, record.job_id, spec.model, spec.size, spec.seconds, cost, now
            )
            match await budgets.reserve(claim):
                case Reserved(reservation=reservation, fresh=fresh):
                    if fresh:  # once per job: a redelivery finds it reserved, counts nothing
                        count_reserved(reservation)
                    await carry_out(jobs, emit, record, event, reservation)
                case Exceeded() as over:
                    note_refused("budget_exceeded", over)
                    await refuse(jobs, emit, record, "budget_exceeded", over.detail)
        case Refused(reason=reason, detail=detail):
            note_refused(reason)
            await refuse(jobs, emit, record, reason, detail)


async def carry_out(
    jobs: JobStore,
    emit: Emit,
    record: JobRecordV1,
    event: JobAcceptedV1,
    reservation: ReservationRecord,
) -> None:
    """Act on the job's reservation: admit a reserved job, refuse one refused for its budget
    (nothing to do when the job ended meanwhile); announce any soft threshold its admission
    crossed. Repeated on a redelivery: the events' ids make the repeats droppable."""
    cost = reservation.estimate_micros
    if reservation.state == "reserved":
        note_admitted(reservation)
        if admitted := await advance(jobs, record, admit, cost_micros=cost):
            await emit(JobAdmittedV1.fact(admitted, spec=admitted.spec, cost_micros=cost))
        elif cancelled_before_admission(await jobs.get(record.tenant, record.job_id)):
            await cancel_job(jobs, emit, record, detail=CANCELLED_BEFORE, stage=SERVICE)
    elif reservation.refused is not None:
        note_refused(reservation.refused)
        await refuse(jobs, emit, record, reservation.refused, reservation.why or "")
    for alert in reservation.alerts:
        await emit(budget_alert(event, alert))


def cancelled_before_admission(record: JobRecordV1 | None) -> bool:
    """Asked to cancel before it was admitted: it can never be (admit leaves only `accepted`),
    so no create of it can exist and pricing_guard may end it. A cancelling job admitted
    earlier is left to the submitter, whose create may be in flight (a redelivered
    `accepted` must not end it before that create's answer is recorded)."""
    if record is None or record.status != JobStatus.CANCELLING:
        return False
    return JobStatus.ADMITTED.value not in record.history


def budget_alert(event: JobAcceptedV1, alert: Alert) -> BudgetAlertV1:
    """The alert of a soft threshold crossed; its id derives from the window and the crossing
    count, so however many copies announce it, JetStream keeps one."""
    slot = alert.slot
    return BudgetAlertV1.caused_by(
        f"budget:{slot.scope}:{slot.period}:{slot.window}",
        event,
        key=str(alert.crossing),
        scope=slot.scope,
        period=slot.period,
        window=slot.window,
        soft_micros=alert.soft_micros,
        limit_micros=alert.limit_micros,
        used_micros=alert.used_micros,
        crossing=alert.crossing,
    )


async def refuse(jobs: JobStore, emit: Emit, job: JobRef, reason: str, detail: str) -> None:
    if await advance(jobs, job, reject, reason=reason, detail=detail, stage=SERVICE):
        await emit(JobRejectedV1.fact(job, reason=reason, detail=detail, stage=SERVICE))


async def settle_record(jobs: JobStore, budgets: BudgetStore, record: JobRecordV1) -> None:
    """Settle the job's reservation by the billing policy, then write the charge on the job
    record. Both are idempotent, so a redelivery (or a crash between them) changes nothing."""

    def billed(reservation: ReservationRecord) -> Settlement:
        return bill(ending(record, reservation))

    settled = await budgets.settle(
        record.tenant, record.job_id, billed, record.status.value, datetime.now(UTC),
        admitted="admitted" in record.history,
    )  # fmt: skip
    if settled is None:
        log.warning("%s: %s was admitted without a reservation: not settled",
                    SERVICE, record.job_id)  # fmt: skip
        return
    if settled.fresh:  # once per job: the write that settled it (a redelivery finds it so)
        count_settled(settled.reservation)
    if settled.reservation.charged_micros is None:
        return  # disputed: no final charge until it is resolved
    await write_charge(jobs, record, settled.reservation.charged_micros)


async def sweep(jobs: JobStore, budgets: BudgetStore, grace: timedelta) -> int:
    """Settle the open reservations of jobs that ended more than `grace` ago (their end event
    was lost, or arrived before the record showed the end). Returns how many it settled."""
    now, settled = datetime.now(UTC), 0
    for tenant, job_id in await budgets.open_jobs():
        record = await jobs.get(tenant, job_id)
        if record is None or not record.terminal:
            continue
        ended_at = record.history.get(record.status.value)
        if ended_at is not None and now - ended_at < grace:
            continue  # its end event is surely still on its way
        await settle_record(jobs, budgets, record)
        settled += 1
    if settled:
        log.warning("%s: sweeper settled %d reservation(s) of ended jobs", SERVICE, settled)
    return settled


def ending(record: JobRecordV1, reservation: ReservationRecord) -> Ending:
    return Ending(
        status=record.status.value,
        reason=record.reason,
        stage=record.stage,
        reached=frozenset(record.history),
        estimate_micros=reservation.estimate_micros,
        requested_seconds=reservation.seconds,
        produced_seconds=record.produced_seconds,
        create_may_exist=record.create_may_exist,
        upstream_known=record.upstream_id is not None,
        base_seconds=record.spec.video_seconds - record.spec.seconds,
    )


async def write_charge(jobs: JobStore, job: JobRef, charged_micros: int) -> None:
    """The final charge on the job record, written once."""

    def change(record: JobRecordV1 | None) -> JobRecordV1 | None:
        if record is None:
            return None
        try:
            return settle(record, charged_micros=charged_micros)
        except IllegalTransition:
            return None

    await jobs.update(job.tenant, job.job_id, change)

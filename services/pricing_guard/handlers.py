"""pricing_guard handlers: price and reserve accepted jobs by their record; settle every job
that ends. Registered on the router in app.py; the use cases live in usecases.py."""

from typing import Annotated

from faststream.exceptions import NackMessage

from services.pricing_guard.ports import BudgetStore, Deps
from services.pricing_guard.usecases import (
    CANCELLED_BEFORE,
    SERVICE,
    admit_job,
    cancelled_before_admission,
    settle_record,
)
from shared.contracts import (
    JobAcceptedV1,
    JobCancelledV1,
    JobCompletedV1,
    JobFailedV1,
    JobTimedOutV1,
)
from shared.contracts.events import Event
from shared.contracts.stage import Cancelling, Disagrees, Ended, Live, Unknown, screen
from shared.jobstore import JobStore
from shared.messaging import Context
from shared.outcomes import cancel_job, ignored, screened

SETTLE_FOREVER = 10**9
NOT_ENDED_RETRY_SECONDS = 10.0
"""An end event whose record has not ended is looked at again this much later."""
# Real annotations here (no `from __future__ import annotations`): FastStream resolves string
# annotations by name, also in its callers' frames, where a local of the same name wins.
# One injection style in every service: the handler takes the service's Deps bundle.
GuardDeps = Annotated[Deps, Context("deps")]


async def on_job_accepted(event: JobAcceptedV1, deps: GuardDeps) -> None:
    """Nothing is reserved for a job without a record, or whose record says otherwise."""
    jobs, emit, provider, budgets = deps.jobs, deps.emit, deps.provider, deps.budgets
    record = await jobs.get(event.tenant, event.job_id)
    match await screened(SERVICE, emit, event, screen(record, event)):
        case Cancelling(record=record) if cancelled_before_admission(record):
            await cancel_job(jobs, emit, record, detail=CANCELLED_BEFORE, stage=SERVICE)
        case Live(record=record) | Cancelling(record=record):
            # A cancelling job admitted earlier: only a reservation already made is carried
            # out (its admission is refused by the lifecycle); the submitter ends it.
            await admit_job(jobs, emit, provider, budgets, record=record, event=event)


# Settling never gives up: money held for a job that ended must come back, so its errors
# are retried (backoff capped at 30 s) for as long as they last; the sweeper backs it up.
# Each settles by the record alone: the event only says that the job ended.
async def on_job_completed(event: JobCompletedV1, deps: GuardDeps) -> None:
    await settle_ended(event, deps.jobs, deps.budgets)


async def on_job_failed(event: JobFailedV1, deps: GuardDeps) -> None:
    await settle_ended(event, deps.jobs, deps.budgets)


async def on_job_timed_out(event: JobTimedOutV1, deps: GuardDeps) -> None:
    await settle_ended(event, deps.jobs, deps.budgets)


async def on_job_cancelled(event: JobCancelledV1, deps: GuardDeps) -> None:
    await settle_ended(event, deps.jobs, deps.budgets)


async def settle_ended(event: Event, jobs: JobStore, budgets: BudgetStore) -> None:
    """Settle a job its record says ended. An end event the record does not bear out (the
    job still runs) is looked at again later, as a delayed redelivery that counts no error on
    the record: a forged end changes nothing, and one read before its record showed the end
    is settled then (the sweeper backs both up)."""
    record = await jobs.get(event.tenant, event.job_id)
    match screen(record, event):
        case Unknown() | Disagrees() as why:
            ignored(SERVICE, event, why)  # nothing was ever reserved on its word
        case Ended(record=ended):
            await settle_record(jobs, budgets, ended)
        case Live() | Cancelling():
            raise NackMessage(delay=NOT_ENDED_RETRY_SECONDS)

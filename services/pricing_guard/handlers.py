"""pricing_guard handlers: price and reserve accepted jobs by their record; settle every job
that ends. Registered on the router in app.py; the use cases live in usecases.py."""

from __future__ import annotations

from typing import Annotated

from services.pricing_guard.ports import BudgetStore
from services.pricing_guard.usecases import (
    CANCELLED_BEFORE,
    SERVICE,
    admit_job,
    cancelled_before_admission,
    settle_job,
)
from shared.contracts import (
    JobAcceptedV1,
    JobCancelledV1,
    JobCompletedV1,
    JobFailedV1,
    JobTimedOutV1,
)
from shared.contracts.stage import Cancelling, Live, screen
from shared.jobstore import JobStore
from shared.messaging import Context
from shared.outcomes import Emit, cancel_job, screened
from shared.registry import ProviderSpec

SETTLE_FOREVER = 10**9
Jobs = Annotated[JobStore, Context("deps.jobs")]
Emitter = Annotated[Emit, Context("deps.emit")]
Prices = Annotated[ProviderSpec, Context("deps.provider")]
Budgets = Annotated[BudgetStore, Context("deps.budgets")]


async def on_job_accepted(
    event: JobAcceptedV1, jobs: Jobs, emit: Emitter, provider: Prices, budgets: Budgets
) -> None:
    """Nothing is reserved for a job without a record, or whose record says otherwise."""
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
# Each reads only the record: the event just says that the job ended.
async def on_job_completed(event: JobCompletedV1, jobs: Jobs, budgets: Budgets) -> None:
    await settle_job(jobs, budgets, event)


async def on_job_failed(event: JobFailedV1, jobs: Jobs, budgets: Budgets) -> None:
    await settle_job(jobs, budgets, event)


async def on_job_timed_out(event: JobTimedOutV1, jobs: Jobs, budgets: Budgets) -> None:
    await settle_job(jobs, budgets, event)


async def on_job_cancelled(event: JobCancelledV1, jobs: Jobs, budgets: Budgets) -> None:
    await settle_job(jobs, budgets, event)

"""pricing_guard budgets under TestNatsBroker: reservation at admission, refusal with a reason,
soft alerts once per crossing, settlement by the billing policy, the spend ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.app import build_router
from services.pricing_guard.budgets import Charge, Limit, Slot, window
from services.pricing_guard.ports import Claim, Deps, Reserved
from services.pricing_guard.records import reservation_key
from services.pricing_guard.usecases import sweep
from shared.contracts import (
    BudgetAlertV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobFailedV1,
    JobRecordV1,
    JobRejectedV1,
    JobStatus,
    JobTimedOutV1,
    JobTimings,
)
from shared.contracts.lifecycle import CreateOutcome
from shared.registry import load_registry
from tests.component.harness import (
    SPEC,
    TENANT,
    Harness,
    accepted,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.component.support import actions
from tests.fakes import InMemoryAtomicStore

COST = 400_000  # SPEC: sora-2, 4 s at $0.10


async def admit(guard: Harness) -> str:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    await guard.send(accepted(job_id))
    return job_id


NO_ANSWER, NOT_SENT = CreateOutcome.NO_ANSWER, CreateOutcome.NOT_SENT
REFUSED, SERVER_ERROR = CreateOutcome.REFUSED, CreateOutcome.SERVER_ERROR


def ended(job_id: str, status: JobStatus, reached: list[str], **changes: object) -> JobRecordV1:
    """A terminal record whose history holds exactly `reached` (and its end)."""
    at = datetime.now(UTC) - timedelta(minutes=5)
    history = {s: at + timedelta(seconds=i) for i, s in enumerate(["accepted", *reached])}
    history[status.value] = datetime.now(UTC)
    return job_record(job_id, JobStatus.ACCEPTED).model_copy(
        update={"status": status, "history": history, "cost_micros": COST, **changes}
    )


async def end(guard: Harness, record: JobRecordV1) -> None:
    if record.status == JobStatus.COMPLETED and record.upstream_id is None:
        record = record.model_copy(update={"upstream_id": "video_1"})  # as its event says
    guard.jobs.put(record)
    now = datetime.now(UTC)
    common = {"event_id": new_event_id(), "occurred_at": now, "job_id": record.job_id}
    if record.status == JobStatus.COMPLETED:
        await guard.send(
            JobCompletedV1(
                **common,
                tenant=TENANT,
                upstream_id="video_1",
                assets=[],
                cost_micros=COST,
                timings=JobTimings(accepted_at=now, completed_at=now, total_seconds=1.0),
            )
        )
    elif record.status == JobStatus.TIMED_OUT:
        await guard.send(
            JobTimedOutV1(
                **common, tenant=TENANT, reason="upstream_timeout", detail="late", stage="poller"
            )
        )
    else:
        await guard.send(
            JobFailedV1(
                **common,
                tenant=TENANT,
                reason=record.reason or "x",
                detail="d",
                stage=record.stage or "poller",
            )
        )


def today(scope: str, period: str = "daily") -> Slot:
    return Slot(scope, period, window(period, datetime.now(UTC)))  # type: ignore[arg-type]


async def test_admission_reserves_the_estimate_in_every_window(
    guard: Harness, budgets: KvBudgets
) -> None:
    job_id = await admit(guard)

    assert guard.bus.one(JobAdmittedV1).cost_micros == COST
    reservation = await budgets.reservation(TENANT, job_id)
    assert reservation is not None
    assert reservation.state == "reserved"
    assert reservation.estimate_micros == COST
    assert len(reservation.slots) == 6  # global and tenant x daily, monthly, lifetime
    for scope in ("global", f"tenant:{TENANT}"):
        for period in ("daily", "monthly", "lifetime"):
            usage = await budgets.usage(today(scope, period))
            assert (usage.reserved, usage.admitted, usage.jobs) == (COST, COST, 1)


async def test_a_redelivered_admission_reserves_once(guard: Harness, budgets: KvBudgets) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    event = accepted(job_id)
    await guard.send(event)
    await guard.send(event, delivery=2)

    assert (await budgets.usage(today("global"))).reserved == COST
    assert len(guard.bus.events(JobAdmittedV1)) == 2  # the same fact id: JetStream keeps one


async def test_over_budget_is_rejected_naming_scope_period_limit_and_what_is_left(
    guard: Harness, budgets: KvBudgets
) -> None:
    now = datetime.now(UTC)
    await budgets.set_limit(f"tenant:{TENANT}", "daily", Limit(1_000_000), now)
    await admit(guard)
    await admit(guard)
    refused = await admit(guard)  # $0.80 used of $1.00: $0.40 does not fit

    rejected = guard.bus.one(JobRejectedV1)
    assert rejected.job_id == refused
    assert rejected.reason == "budget_exceeded"
    assert rejected.stage == "pricing_guard"
    assert f"tenant:{TENANT}" in rejected.detail
    assert "daily" in rejected.detail
    assert "$1.00" in rejected.detail
    assert "$0.20 left" in rejected.detail
    assert "$0.40" in rejected.detail
    refusal = await budgets.reservation(TENANT, refused)  # the refusal is kept, at $0
    assert refusal is not None
    assert (refusal.state, refusal.refused, refusal.charged_micros) == (
        "released",
        "budget_exceeded",
        0,
    )
    usage = await budgets.usage(today(f"tenant:{TENANT}"))
    assert usage.reserved == 2 * COST
    assert guard.jobs.records()[refused].status == JobStatus.REJECTED


async def test_a_global_limit_binds_every_tenant(guard: Harness, budgets: KvBudgets) -> None:
    await budgets.set_limit("global", "lifetime", Limit(COST), datetime.now(UTC))
    await admit(guard)
    await admit(guard)

    assert "global" in guard.bus.one(JobRejectedV1).detail


async def test_soft_threshold_alerts_once_per_crossing(guard: Harness, budgets: KvBudgets) -> None:
    await budgets.set_limit("global", "daily", Limit(10 * COST, soft_micros=2 * COST), now())
    await admit(guard)
    assert guard.bus.events(BudgetAlertV1) == []
    crossing = await admit(guard)  # used reaches the soft threshold
    await admit(guard)  # above it: no new alert

    alert = guard.bus.one(BudgetAlertV1)
    assert alert.job_id == crossing
    assert (alert.scope, alert.period, alert.crossing) == ("global", "daily", 1)
    assert (alert.soft_micros, alert.limit_micros, alert.used_micros) == (
        2 * COST,
        10 * COST,
        2 * COST,
    )


def now() -> datetime:
    return datetime.now(UTC)


async def test_completed_job_is_charged_the_seconds_produced_and_ledgered_once(
    guard: Harness, budgets: KvBudgets
) -> None:
    job_id = await admit(guard)
    done = ended(
        job_id,
        JobStatus.COMPLETED,
        ["admitted", "submitting", "submitted", "generated"],
        produced_seconds=2,
    )
    await end(guard, done)
    await end(guard, done)  # a redelivery settles nothing twice

    reservation = await budgets.reservation(TENANT, job_id)
    assert reservation is not None
    assert (reservation.state, reservation.charged_micros) == ("charged", COST // 2)
    assert guard.jobs.records()[job_id].charged_micros == COST // 2
    (entry,) = await budgets.spend(TENANT)
    assert (entry.amount_micros, entry.seconds, entry.settlement, entry.outcome) == (
        COST // 2,
        2,
        "charged",
        "completed",
    )
    usage = await budgets.usage(today("global"))
    assert (usage.reserved, usage.settled, usage.released) == (0, COST // 2, COST // 2)
    assert usage.balanced


@pytest.mark.parametrize(
    ("status", "reached", "changes", "state"),
    [
        (
            JobStatus.FAILED,
            ["admitted"],
            {"reason": "retries_exhausted", "stage": "submitter"},
            "released",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting", "submitted"],
            {"reason": "moderation_blocked", "stage": "poller"},
            "released",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting", "submitted"],
            {"reason": "internal_error", "stage": "poller"},
            "released",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting"],
            {"reason": "create_ambiguous", "stage": "submitter"},
            "disputed",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting"],
            {"reason": "create_ambiguous", "stage": "submitter", "create_outcome": NO_ANSWER},
            "disputed",
        ),
        # Sent back by a 429 (its history keeps `submitting`), then timed out: nothing exists.
        (
            JobStatus.TIMED_OUT,
            ["admitted", "submitting"],
            {"reason": "submit_timeout", "stage": "submitter", "create_outcome": REFUSED},
            "released",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting"],
            {"reason": "retries_exhausted", "stage": "submitter", "create_outcome": NOT_SENT},
            "released",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting"],
            {"reason": "retries_exhausted", "stage": "submitter", "create_outcome": SERVER_ERROR},
            "disputed",
        ),
        # A record without the field (written before it existed): its history decides.
        (
            JobStatus.TIMED_OUT,
            ["admitted", "submitting"],
            {"reason": "submit_timeout", "stage": "submitter"},
            "disputed",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting", "submitted"],
            {"reason": "retries_exhausted", "stage": "poller"},
            "disputed",
        ),
        (
            JobStatus.TIMED_OUT,
            ["admitted", "submitting", "submitted"],
            {"reason": "upstream_timeout", "stage": "poller"},
            "disputed",
        ),
        (
            JobStatus.FAILED,
            ["admitted", "submitting", "submitted", "generated"],
            {"reason": "asset_expired", "stage": "storage"},
            "charged",
        ),
    ],
)
async def test_billing_policy_by_outcome(
    guard: Harness,
    budgets: KvBudgets,
    status: JobStatus,
    reached: list[str],
    changes: dict[str, object],
    state: str,
) -> None:
    job_id = await admit(guard)
    await end(guard, ended(job_id, status, reached, **changes))

    reservation = await budgets.reservation(TENANT, job_id)
    assert reservation is not None
    assert reservation.state == state, reservation.why
    usage = await budgets.usage(today(f"tenant:{TENANT}"))
    assert usage.balanced
    assert usage.reserved == 0
    ledger = await budgets.spend(TENANT)
    record = guard.jobs.records()[job_id]
    if state == "disputed":
        assert usage.disputed == COST  # never silently refunded
        assert ledger == []
        assert record.charged_micros is None
        assert [d.job_id for d in await budgets.disputes()] == [job_id]
    else:
        assert usage.disputed == 0
        assert [e.settlement for e in ledger] == [state]
        assert record.charged_micros == (COST if state == "charged" else 0)


async def test_a_dispute_resolved_as_charged_moves_to_the_ledger(
    guard: Harness, budgets: KvBudgets
) -> None:
    job_id = await admit(guard)
    await end(
        guard,
        ended(
            job_id,
            JobStatus.TIMED_OUT,
            ["admitted", "submitting", "submitted"],
            reason="upstream_timeout",
            stage="poller",
        ),
    )
    resolved = await budgets.resolve(TENANT, job_id, Charge(COST, "billed"), now())
    again = await budgets.resolve(TENANT, job_id, Charge(COST, "billed"), now())

    assert resolved is not None
    assert resolved.fresh
    assert again is not None
    assert not again.fresh
    assert await budgets.disputes() == []
    usage = await budgets.usage(today("global"))
    assert (usage.disputed, usage.settled) == (0, COST)
    assert usage.balanced
    assert [(e.outcome, e.amount_micros) for e in await budgets.spend()] == [("resolved", COST)]


async def test_a_job_ended_before_reserving_closes_its_reservation_at_zero(
    guard: Harness, budgets: KvBudgets
) -> None:
    job_id = new_job_id()
    await end(
        guard, ended(job_id, JobStatus.FAILED, [], reason="poison_message", stage="pricing_guard")
    )
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))  # a late admission of the same job
    await guard.send(accepted(job_id))

    assert (await budgets.usage(today("global"))).admitted == 0  # nothing reserved late
    assert guard.bus.events(JobAdmittedV1) == []


async def test_a_refused_admission_stays_refused_when_room_opens_before_a_redelivery(
    guard: Harness, budgets: KvBudgets
) -> None:
    """Two copies of one accepted event: the first is refused; room opens (the limit is
    raised); the second must not reserve for a job the first copy is rejecting."""
    await budgets.set_limit("global", "lifetime", Limit(COST // 2), now())
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    event = accepted(job_id)
    await guard.send(event)
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))  # as if the rejection were not written
    await budgets.set_limit("global", "lifetime", Limit(100 * COST), now())
    await guard.send(event, delivery=2)

    assert guard.bus.events(JobAdmittedV1) == []
    assert {e.reason for e in guard.bus.events(JobRejectedV1)} == {"budget_exceeded"}
    assert guard.jobs.records()[job_id].status == JobStatus.REJECTED
    assert (await budgets.usage(today("global", "lifetime"))).admitted == 0


async def test_a_reservation_made_before_a_crash_is_honoured_even_if_the_model_retired_since(
    budgets: KvBudgets,
) -> None:
    job_id = new_job_id()
    claim = Claim(TENANT, job_id, SPEC.model, SPEC.size, SPEC.seconds, COST, now())
    await budgets.reserve(claim)  # reserved, then the process died before admitting
    openai = load_registry().provider("openai")  # the redelivery meets a retired model
    async with running(build_router(), lambda f: Deps(f.jobs, f.emit, openai, budgets)) as h:
        h.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
        await h.send(accepted(job_id), delivery=2)
        assert h.bus.one(JobAdmittedV1).cost_micros == COST
        assert h.bus.events(JobRejectedV1) == []


async def test_an_end_event_ahead_of_its_record_is_retried_not_acked(guard: Harness) -> None:
    job_id = await admit(guard)
    now_ = datetime.now(UTC)
    event = JobFailedV1(
        event_id=new_event_id(),
        occurred_at=now_,
        job_id=job_id,
        tenant=TENANT,
        reason="x",
        detail="d",
        stage="poller",
    )
    await guard.send(event)  # the record still says admitted

    assert actions(guard.outcomes(event)) == ["nak"]


async def test_the_sweeper_settles_reservations_whose_end_event_was_lost(
    guard: Harness, budgets: KvBudgets
) -> None:
    ended_long_ago = await admit(guard)
    ended_just_now = await admit(guard)
    still_running = await admit(guard)
    old = ended(
        ended_long_ago,
        JobStatus.FAILED,
        ["admitted"],
        reason="retries_exhausted",
        stage="submitter",
    )
    old = old.model_copy(update={"history": {**old.history, "failed": now() - timedelta(hours=1)}})
    guard.jobs.put(old)
    guard.jobs.put(
        ended(
            ended_just_now,
            JobStatus.FAILED,
            ["admitted"],
            reason="retries_exhausted",
            stage="submitter",
        )
    )

    assert await sweep(guard.jobs, budgets, timedelta(minutes=2)) == 1

    assert sorted(await budgets.open_jobs()) == sorted(
        [(TENANT, ended_just_now), (TENANT, still_running)]
    )
    swept = await budgets.reservation(TENANT, ended_long_ago)
    assert swept is not None
    assert swept.state == "released"
    assert guard.jobs.records()[ended_long_ago].charged_micros == 0
    assert await sweep(guard.jobs, budgets, timedelta(minutes=2)) == 0  # idempotent


async def test_a_job_admitted_before_budgets_existed_is_not_closed_at_zero(
    guard: Harness, budgets: KvBudgets
) -> None:
    job_id = new_job_id()  # no reservation: admitted by a pricing_guard without budgets
    await end(
        guard,
        ended(
            job_id,
            JobStatus.TIMED_OUT,
            ["admitted", "submitting", "submitted"],
            reason="upstream_timeout",
            stage="poller",
        ),
    )

    assert await budgets.reservation(TENANT, job_id) is None
    assert guard.jobs.records()[job_id].charged_micros is None


async def test_one_bad_claim_in_a_group_fails_alone() -> None:
    store = InMemoryAtomicStore()
    budgets = KvBudgets(store)
    bad, good = new_job_id(), new_job_id()
    await store.write({reservation_key(TENANT, bad): b"{not json"}, {})  # a corrupt record
    results = await asyncio.gather(
        budgets.reserve(Claim(TENANT, bad, "sora-2", "1280x720", 4, COST, now())),
        budgets.reserve(Claim(TENANT, good, "sora-2", "1280x720", 4, COST, now())),
        return_exceptions=True,
    )
    assert isinstance(results[0], ValueError)
    assert isinstance(results[1], Reserved)

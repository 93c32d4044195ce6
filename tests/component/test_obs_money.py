"""pricing_guard's metrics and spans (services/pricing_guard/observe.py, shared/moves.py):
each transition and each micro-dollar counted once per job, under redelivery too; a budget's
refusal counted; budget gauges; the decision and the settlement on the job's span."""

from __future__ import annotations

from datetime import UTC, datetime

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.admin import resolve_dispute
from services.pricing_guard.budgets import Limit, Release
from services.pricing_guard.observe import Gauges
from services.pricing_guard.usecases import admit_job
from shared.contracts import JobRejectedV1, JobStatus
from shared.contracts.events import Event
from shared.moves import provider
from tests.component.conftest import SIMULATOR
from tests.component.harness import TENANT, Harness, accepted, job_record, new_job_id
from tests.component.test_budgets import COST, admit, end, ended
from tests.metered import gauge, total

MONEY = {"tenant": TENANT, "model": "sora-2"}


def moves(to_state: str, **labels: str) -> float:
    return total("clipline.job.transitions", tenant=TENANT, to_state=to_state, **labels)


async def test_a_job_is_counted_once_under_redelivery(guard: Harness) -> None:
    admitted_before = moves("admitted", from_state="accepted", model="sora-2", kind="generate")
    stage_before = total("clipline.stage.duration", stage="accepted", model="sora-2")
    reserved_before = total("clipline.cost.reserved_micros", **MONEY)
    settled_before = total("clipline.cost.settled_micros", **MONEY)

    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    event = accepted(job_id)
    await guard.send(event)
    await guard.send(event, delivery=2)  # a redelivery: nothing moves, nothing is reserved
    await guard.send(event, delivery=3)

    assert moves("admitted", from_state="accepted", model="sora-2") - admitted_before == 1
    assert total("clipline.stage.duration", stage="accepted", model="sora-2") - stage_before == 1
    reserved = total("clipline.cost.reserved_micros", **MONEY, provider=provider())
    assert reserved - reserved_before == COST

    done = ended(job_id, JobStatus.COMPLETED, ["admitted", "submitting", "submitted",
                                               "generating", "generated", "storing"])  # fmt: skip
    await end(guard, done)
    await end(guard, done)  # the end event again: settled once
    charged = guard.jobs.records()[job_id].charged_micros
    assert charged == COST
    assert total("clipline.cost.settled_micros", **MONEY) - settled_before == charged


async def test_a_refusal_for_the_budget_is_counted_with_its_reason(
    guard: Harness, budgets: KvBudgets
) -> None:
    refused_before = moves("rejected", from_state="accepted", reason="budget_exceeded")
    await budgets.set_limit(f"tenant:{TENANT}", "daily", Limit(1_000_000, 600_000), _now())
    await admit(guard)
    await admit(guard)
    await admit(guard)  # $0.80 used of $1.00: refused

    assert guard.bus.one(JobRejectedV1).reason == "budget_exceeded"
    assert moves("rejected", from_state="accepted", reason="budget_exceeded") - refused_before == 1
    labels = {"scope": "tenant", "tenant": TENANT, "window": "daily"}
    assert gauge("clipline.budget.utilisation_ratio", **labels) == 0.8  # as written
    assert gauge("clipline.budget.soft_threshold_ratio", **labels) == 0.6


async def test_the_gauges_are_read_again_from_the_store(budgets: KvBudgets) -> None:
    tenant = "gauged"
    await budgets.set_limit(f"tenant:{tenant}", "monthly", Limit(2_000_000), _now())
    await Gauges(budgets).refresh()
    labels = {"scope": "tenant", "tenant": tenant, "window": "monthly"}
    assert gauge("clipline.budget.utilisation_ratio", **labels) == 0.0
    assert gauge("clipline.budget.soft_threshold_ratio", **labels) is None  # no soft threshold


async def test_the_budget_decision_is_on_the_jobs_span(guard: Harness, budgets: KvBudgets) -> None:
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    job_id = new_job_id()
    record = job_record(job_id, JobStatus.ACCEPTED)
    guard.jobs.put(record)

    async def emit(event: Event) -> None:
        return None

    with tracing.get_tracer("test").start_as_current_span("accepted process"):
        await admit_job(guard.jobs, emit, SIMULATOR, budgets, record=record,
                        event=accepted(job_id))  # fmt: skip
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["clipline.budget.decision"] == "admit"
    assert attributes["clipline.cost.reserved_micros"] == COST
    assert attributes["clipline.job.id"] == job_id
    assert attributes["clipline.tenant"] == TENANT
    assert attributes["clipline.model"] == "sora-2"
    assert attributes["clipline.kind"] == "generate"
    moved = [e for e in span.events if e.name == "clipline.transition"]
    assert [(e.attributes or {}).get("clipline.to_state") for e in moved] == ["admitted"]


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_dispute_is_counted_once_gauged_and_its_resolution_settled(
    guard: Harness, budgets: KvBudgets
) -> None:
    disputed_before = total("clipline.cost.disputed_micros", **MONEY)
    released_before = total("clipline.cost.released_micros", **MONEY)
    job_id = await admit(guard)
    ambiguous = ended(job_id, JobStatus.FAILED, ["admitted", "submitting"],
                      reason="create_ambiguous", stage="submitter")  # fmt: skip
    await end(guard, ambiguous)
    await end(guard, ambiguous)  # its end again: disputed once
    assert total("clipline.cost.disputed_micros", **MONEY) - disputed_before == COST

    gauges = Gauges(budgets)
    await gauges.refresh()
    assert gauge("clipline.reservations.disputed", tenant=TENANT) == 1

    answer = await resolve_dispute(budgets, guard.jobs, TENANT, job_id, Release("no video"))
    assert answer.status_code == 200
    assert total("clipline.cost.released_micros", **MONEY) - released_before == COST
    await gauges.refresh()
    assert gauge("clipline.reservations.disputed", tenant=TENANT) == 0  # back to none

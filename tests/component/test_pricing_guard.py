"""pricing_guard under TestNatsBroker: admission by price, settlement when jobs end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.app import build_router
from services.pricing_guard.ports import Deps
from shared.contracts import (
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobFailedV1,
    JobRejectedV1,
    JobSpec,
    JobStatus,
    JobTimings,
)
from shared.contracts.ids import fact_event_id
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


def completed(job_id: str, cost_micros: int) -> JobCompletedV1:
    now = datetime.now(UTC)
    return JobCompletedV1(
        event_id=new_event_id(), occurred_at=now, job_id=job_id, tenant=TENANT,
        upstream_id="video_1", assets=[], cost_micros=cost_micros,
        timings=JobTimings(accepted_at=now, completed_at=now, total_seconds=0.0),
    )  # fmt: skip


def failed(job_id: str, stage: str = "poller", reason: str = "moderation_blocked") -> JobFailedV1:
    return JobFailedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        reason=reason, detail="upstream said no", stage=stage,
    )  # fmt: skip


async def test_priced_job_is_admitted_with_integer_cost(guard: Harness) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    event = accepted(job_id)
    await guard.send(event)

    admitted = guard.bus.one(JobAdmittedV1)
    assert admitted.cost_micros == 400_000
    assert isinstance(admitted.cost_micros, int)
    assert admitted.job_id == job_id
    assert admitted.spec == SPEC
    assert admitted.event_id == fact_event_id(job_id, "admitted")
    assert guard.bus.events(JobRejectedV1) == []
    record = guard.jobs.records()[job_id]
    assert record.status == JobStatus.ADMITTED
    assert record.cost_micros == 400_000
    assert "admitted" in record.history
    assert actions(guard.outcomes(event)) == ["ack"]


@pytest.mark.parametrize(
    ("model", "size", "seconds", "cost"),
    [
        ("sora-2", "720x1280", 12, 1_200_000),
        ("sora-2-pro", "1280x720", 8, 2_400_000),
        ("sora-2-pro-2025-10-06", "1792x1024", 20, 10_000_000),  # an alias
    ],
)
async def test_cost_follows_the_registry(
    guard: Harness, model: str, size: str, seconds: int, cost: int
) -> None:
    job_id = new_job_id()
    spec = JobSpec(model=model, size=size, seconds=seconds, prompt="p")
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED, spec=spec))
    await guard.send(accepted(job_id, spec))

    assert guard.bus.one(JobAdmittedV1).cost_micros == cost
    assert guard.jobs.records()[job_id].cost_micros == cost


async def test_unpriced_size_is_rejected_never_run_free(guard: Harness) -> None:
    job_id = new_job_id()
    spec = JobSpec(model="sora-2-pro", size="1920x1080", seconds=4, prompt="p")
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED, spec=spec))
    event = accepted(job_id, spec)
    await guard.send(event)

    rejected = guard.bus.one(JobRejectedV1)
    assert rejected.reason == "unpriced"
    assert rejected.stage == "pricing_guard"
    assert rejected.event_id == fact_event_id(job_id, "rejected")
    assert guard.bus.events(JobAdmittedV1) == []
    record = guard.jobs.records()[job_id]
    assert record.status == JobStatus.REJECTED
    assert record.reason == "unpriced"
    assert record.cost_micros is None


async def test_a_model_its_provider_retired_is_rejected_model_retired() -> None:
    """Under `openai` (shut down 2026-09-24, before this test was written): refused by the
    clock the handler reads, and before pricing, so even an unpriced size says why."""
    openai = load_registry().provider("openai")
    budgets = KvBudgets(InMemoryAtomicStore())
    async with running(build_router(), lambda f: Deps(f.jobs, f.emit, openai, budgets)) as guard:
        for size in ("1280x720", "1920x1080"):
            job_id = new_job_id()
            spec = JobSpec(model="sora-2-pro", size=size, seconds=4, prompt="p")
            guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED, spec=spec))
            await guard.send(accepted(job_id, spec))

            rejected = guard.bus.events(JobRejectedV1)[-1]
            assert (rejected.job_id, rejected.reason, rejected.stage) == (
                job_id,
                "model_retired",
                "pricing_guard",
            )
            assert rejected.detail == (
                "sora-2-pro was retired by openai on 2026-09-24; no replacement was named"
            )
            record = guard.jobs.records()[job_id]
            assert (record.status, record.reason) == (JobStatus.REJECTED, "model_retired")
            assert record.cost_micros is None
        assert guard.bus.events(JobAdmittedV1) == []


async def test_redelivered_accepted_is_admitted_again_with_same_id(guard: Harness) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    event = accepted(job_id)
    await guard.send(event)
    await guard.send(event, delivery=2)  # e.g. the ack was lost

    first, second = guard.bus.events(JobAdmittedV1)
    assert first.event_id == second.event_id  # JetStream drops the duplicate
    assert guard.jobs.writes == [job_id]  # the second transition is refused, nothing rewritten


async def test_admission_reached_twice_is_one_fact(guard: Harness) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    await guard.send(accepted(job_id))
    await guard.send(accepted(job_id))  # another accepted event of the same job (a new id)

    first, second = guard.bus.events(JobAdmittedV1)
    assert first.event_id == second.event_id == fact_event_id(job_id, "admitted")
    assert guard.jobs.writes == [job_id]


async def test_accepted_for_a_job_that_moved_on_is_not_announced_again(guard: Harness) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.SUBMITTED, cost_micros=400_000))
    await guard.send(accepted(job_id))

    assert guard.bus.events(JobAdmittedV1) == []
    assert guard.jobs.writes == []


async def test_accepted_for_an_unknown_job_is_not_admitted(guard: Harness) -> None:
    await guard.send(accepted(new_job_id()))

    assert guard.bus.kinds() == ["accepted"]
    assert guard.jobs.records() == {}


async def test_undecodable_accepted_event_fails_the_job(guard: Harness) -> None:
    job_id = new_job_id()
    subject = JobAcceptedV1.subject_filter(TENANT, job_id)
    body = f'{{"job_id": "{job_id}", "tenant": "{TENANT}", "spec": "nope"}}'
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    await guard.send_raw(
        subject, body.encode(), "msg-poison", JobAcceptedV1.durable("pricing_guard")
    )

    failure = guard.bus.one(JobFailedV1)
    assert failure.job_id == job_id
    assert failure.reason == "poison_message"
    assert failure.stage == "pricing_guard"
    assert failure.event_id == fact_event_id(job_id, "failed")
    assert actions(guard.bus.actions(subject)) == ["term"]
    assert guard.bus.events(JobAdmittedV1) == []
    record = guard.jobs.records()[job_id]
    assert record.status == JobStatus.FAILED  # recorded before it is announced
    assert record.reason == "poison_message"
    assert record.charged_micros == 0  # its own failed event closed it at $0

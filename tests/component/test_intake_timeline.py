"""GET /v1/jobs/{id}/timeline on in-memory ports: a job's steps from its stored events and its
record, only for the key's tenant (404 problem otherwise), the record's steps when the events
aged out (and a note saying so), a 503 problem when the stream cannot be read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from services.intake.ports import StoredEvent
from services.intake.problems import PROBLEM_MEDIA_TYPE
from shared.contracts import JobStatus
from shared.contracts.events import (
    BudgetAlertV1,
    Event,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobGeneratedV1,
    JobSubmittedV1,
    JobTimings,
)
from tests.component.facade_support import serving
from tests.component.harness import SPEC, job_record, new_job_id
from tests.fakes import bearer

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TRACE = "ab" * 16


class StreamOf:
    """JobEvents over a list of stored events: a job's (by its subject), then caught up."""

    def __init__(self, stored: list[StoredEvent], *, broken: bool = False) -> None:
        self.stored = stored
        self.broken = broken
        self.asked: list[tuple[str, str]] = []

    async def follow(
        self, tenant: str, job_id: str, after: int, idle_seconds: float
    ) -> AsyncIterator[StoredEvent | None]:
        self.asked.append((tenant, job_id))
        if self.broken:
            raise ConnectionError("nats is gone")
        for s in self.stored:
            if s.seq > after and s.subject.endswith(f".{tenant}.{job_id}"):
                yield s
        yield None


def stored(seq: int, event: Event, subject: str | None = None) -> StoredEvent:
    traceparent = f"00-{TRACE}-{'cd' * 8}-01"
    return StoredEvent(
        seq, subject or event.subject, event.model_dump_json(), {"traceparent": traceparent}
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def life(job_id: str) -> tuple[Any, list[StoredEvent]]:
    """A completed, settled job's record and its events, as the pipeline leaves them."""
    record = job_record(
        job_id, JobStatus.ADMITTED, cost_micros=400_000, charged_micros=400_000,
        trace_id=TRACE, upstream_id="video_1",
    ).model_copy(update={"status": JobStatus.COMPLETED, "history": {
        "accepted": at(0), "admitted": at(0.1), "submitting": at(0.2), "submitted": at(0.4),
        "generated": at(2), "storing": at(2.1), "completed": at(3),
    }})  # fmt: skip

    def fact(kind: type[Event], seconds: float, **fields: Any) -> Event:
        return kind.fact(record, **fields).model_copy(update={"occurred_at": at(seconds)})

    timings = JobTimings(accepted_at=at(0), completed_at=at(3), total_seconds=3)
    alert = BudgetAlertV1.fact(
        record, scope="global", period="daily", window="2026-12-07",
        soft_micros=1, limit_micros=2, used_micros=2, crossing=1,
    )  # fmt: skip
    done = fact(JobCompletedV1, 3.01, upstream_id="v", assets=[], cost_micros=400_000,
                timings=timings)  # fmt: skip
    events = [
        stored(1, fact(JobAcceptedV1, 0.01, spec=SPEC, idempotency_key="k")),
        stored(2, fact(JobAdmittedV1, 0.11, spec=SPEC, cost_micros=400_000)),
        stored(3, alert),  # a tenant never sees a budget alert
        stored(4, fact(JobSubmittedV1, 0.41, spec=SPEC, cost_micros=400_000, upstream_id="v")),
        stored(5, fact(JobGeneratedV1, 2.01, upstream_id="v", cost_micros=400_000)),
        stored(6, done),
    ]
    return record, events


async def test_a_completed_job_reads_step_by_step_with_services_costs_and_the_charge() -> None:
    job_id = new_job_id()
    record, events = life(job_id)
    async with serving(job_events=StreamOf(events)) as s:
        s.jobs.put(record)
        r = await s.client.get(f"/v1/jobs/{job_id}/timeline")

    assert r.status_code == 200, r.text
    body = r.json()
    assert [(x["step"], x["source"], x["service"]) for x in body["steps"]] == [
        ("accepted", "event", "intake"),
        ("admitted", "event", "pricing_guard"),
        ("submitting", "record", "submitter"),
        ("submitted", "event", "submitter"),
        ("generated", "event", "poller"),
        ("storing", "record", "storage"),
        ("completed", "event", "storage"),
    ]
    assert [x["seq"] for x in body["steps"]] == [1, 2, None, 4, 5, None, 6]
    assert [x["since_start_seconds"] for x in body["steps"]] == [
        0.01, 0.11, 0.2, 0.41, 2.01, 2.1, 3.01
    ]  # fmt: skip
    assert body["steps"][1]["cost_kind"] == "reserved"
    assert body["steps"][1]["cost_micros"] == 400_000
    assert body["steps"][0]["trace_id"] == TRACE
    assert (body["charged_micros"], body["settled"], body["trace_id"]) == (400_000, True, TRACE)
    assert (body["status"], body["events_read"], body["notes"]) == ("completed", 5, [])
    assert body["total_seconds"] == 3.01


async def test_another_tenants_job_is_not_found_and_its_events_are_never_read() -> None:
    job_id = new_job_id()
    record, events = life(job_id)
    stream = StreamOf(events)
    async with serving(job_events=stream) as s:
        s.jobs.put(record)
        r = await s.client.get(f"/v1/jobs/{job_id}/timeline", headers=bearer("globex"))
        unknown = await s.client.get("/v1/jobs/not-a-job/timeline")

    for answer in (r, unknown):
        assert answer.status_code == 404
        assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert answer.json()["reason"] == "not_found"
    assert stream.asked == []


async def test_events_aged_out_leave_what_the_record_holds_and_say_so() -> None:
    job_id = new_job_id()
    record, _ = life(job_id)
    async with serving(job_events=StreamOf([])) as s:
        s.jobs.put(record)
        r = await s.client.get(f"/v1/jobs/{job_id}/timeline")

    body = r.json()
    assert r.status_code == 200
    assert [x["step"] for x in body["steps"]] == [
        "accepted", "admitted", "submitting", "submitted", "generated", "storing", "completed"
    ]  # fmt: skip
    assert {x["source"] for x in body["steps"]} == {"record"}
    assert body["steps"][-1]["service"] == "storage"
    assert "no event of this job is on the stream any more" in body["notes"][0]


async def test_an_event_whose_body_names_another_job_is_left_out() -> None:
    job_id, other = new_job_id(), new_job_id()
    record, events = life(job_id)
    _, foreign = life(other)
    forged = stored(7, JobCompletedV1.model_validate_json(foreign[-1].data), events[-1].subject)
    async with serving(job_events=StreamOf([*events[:4], forged])) as s:
        s.jobs.put(record)
        body = (await s.client.get(f"/v1/jobs/{job_id}/timeline")).json()

    completed = [x for x in body["steps"] if x["step"] == "completed"]
    assert [x["source"] for x in completed] == ["record"]  # the forged one is not believed


async def test_a_stream_that_cannot_be_read_is_a_503_problem() -> None:
    job_id = new_job_id()
    record, _ = life(job_id)
    async with serving(job_events=StreamOf([], broken=True)) as s:
        s.jobs.put(record)
        r = await s.client.get(f"/v1/jobs/{job_id}/timeline")

    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.json()["reason"] == "unavailable"


async def test_an_intake_without_events_answers_the_record_and_says_so() -> None:
    job_id = new_job_id()
    record, _ = life(job_id)
    async with serving(job_events=None) as s:
        s.jobs.put(record)
        body = (await s.client.get(f"/v1/jobs/{job_id}/timeline")).json()

    assert body["notes"][0] == "this intake reads no job events: every step is the record's"
    assert len(body["steps"]) == 7


async def test_times_are_answered_in_utc_whatever_offset_an_event_states() -> None:
    job_id = new_job_id()
    record, events = life(job_id)
    elsewhere = timezone(timedelta(hours=5))
    shifted = JobAcceptedV1.model_validate_json(events[0].data)
    shifted = shifted.model_copy(update={"occurred_at": at(0.01).astimezone(elsewhere)})
    async with serving(job_events=StreamOf([stored(1, shifted), *events[1:]])) as s:
        s.jobs.put(record)
        body = (await s.client.get(f"/v1/jobs/{job_id}/timeline")).json()

    assert body["steps"][0]["at"] == "2026-12-07T12:00:00.010000Z"
    assert body["steps"][0]["since_start_seconds"] == 0.01

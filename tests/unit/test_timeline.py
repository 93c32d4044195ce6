"""A job's timeline (services/intake/timeline.py): steps from events in stream order, the
record's states no event stands for merged in by time, the service of each derived from who may
emit it (shared/emitters.py), durations, costs, reasons, and what the notes say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.intake.timeline import Happened, Known, build, trace_of
from shared.emitters import EMITTERS, WRITERS, emitter
from shared.identities import SERVICES

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def completed_record(**changes: object) -> Known:
    history = {
        "accepted": at(0), "admitted": at(0.2), "submitting": at(0.3), "submitted": at(0.5),
        "generating": at(1), "generated": at(3), "storing": at(3.2), "completed": at(4),
    }  # fmt: skip
    fields: dict[str, object] = {
        "status": "completed", "history": history, "cost_micros": 400_000,
        "charged_micros": 400_000, "trace_id": "a" * 32, "submit_attempts": 1,
    }  # fmt: skip
    return Known(**(fields | changes))  # type: ignore[arg-type]


EVENTS = [
    Happened(1, "accepted", at(0.01)),
    Happened(2, "admitted", at(0.21), cost_micros=400_000),
    Happened(3, "submitted", at(0.51), cost_micros=400_000),
    Happened(4, "progress", at(1.01), progress=40),
    Happened(5, "generated", at(3.01), cost_micros=400_000),
    Happened(6, "completed", at(4.01), cost_micros=400_000),
]


def timeline(events: list[Happened], known: Known, **options: bool):  # type: ignore[no-untyped-def]
    return build(events, known, emitter=emitter, writers=WRITERS, **options)


def test_a_completed_job_reads_from_intake_to_storage_in_order() -> None:
    found = timeline(EVENTS, completed_record())

    steps = [(s.step, s.source, s.service) for s in found.steps]
    assert steps == [
        ("accepted", "event", "intake"),
        ("admitted", "event", "pricing_guard"),
        ("submitting", "record", "submitter"),
        ("submitted", "event", "submitter"),
        ("progress", "event", "poller"),
        ("generated", "event", "poller"),
        ("storing", "record", "storage"),
        ("completed", "event", "storage"),
    ]
    assert [s.since_previous_seconds for s in found.steps] == [
        0.01, 0.2, 0.09, 0.21, 0.5, 2.0, 0.19, 0.81
    ]  # fmt: skip
    assert found.steps[-1].since_start_seconds == found.total_seconds == 4.01
    assert [s.cost_kind for s in found.steps if s.cost_micros] == ["reserved"] + ["price"] * 3
    assert found.steps[4].progress == 40
    assert (found.charged_micros, found.trace_id, found.events_read) == (400_000, "a" * 32, 6)
    assert found.notes == ()


def test_an_end_names_the_service_the_record_says_and_its_reason() -> None:
    known = completed_record(
        status="failed", history={"accepted": at(0), "admitted": at(1), "failed": at(2)},
        reason="upstream_failed", detail="moderation", stage="poller", charged_micros=0,
    )  # fmt: skip
    events = [Happened(1, "accepted", at(0)), Happened(2, "admitted", at(1), cost_micros=9),
              Happened(3, "failed", at(2), reason="upstream_failed", detail="moderation",
                       stage="storage")]  # fmt: skip

    last = timeline(events, known).steps[-1]

    assert (last.step, last.service, last.reason, last.detail) == (
        "failed", "poller", "upstream_failed", "moderation"
    )  # fmt: skip


def test_a_claimed_service_that_may_not_emit_the_kind_is_not_believed() -> None:
    assert emitter("rejected", "storage") is None  # only intake or pricing_guard may reject
    assert emitter("rejected", "pricing_guard") == "pricing_guard"
    assert emitter("completed", "intake") == "storage"  # one emitter: the claim is irrelevant
    assert emitter("no_such_kind", "intake") is None


def test_retries_are_told_on_the_submitting_step() -> None:
    known = completed_record(submit_attempts=3, create_outcome="created", errors={"poller": 2})

    found = timeline(EVENTS, known)

    [submitting] = [s for s in found.steps if s.step == "submitting"]
    assert submitting.reason == "retried"
    assert submitting.detail == "3 upstream create attempts (last: created)"
    assert (found.submit_attempts, dict(found.errors)) == (3, {"poller": 2})


def test_events_aged_out_of_the_stream_leave_the_records_steps_and_say_so() -> None:
    found = timeline([], completed_record())

    assert [s.step for s in found.steps] == [
        "accepted", "admitted", "submitting", "submitted", "generating", "generated",
        "storing", "completed",
    ]  # fmt: skip
    assert {s.source for s in found.steps} == {"record"}
    assert found.steps[-1].service == "storage"
    assert found.total_seconds == 4.0
    assert "no event of this job is on the stream any more" in found.notes[0]


def test_a_missing_event_is_filled_from_the_record_and_named() -> None:
    found = timeline([e for e in EVENTS if e.kind != "generated"], completed_record())

    [generated] = [s for s in found.steps if s.step == "generated"]
    assert (generated.source, generated.at) == ("record", at(3))
    assert found.notes == (
        "no event found for generated (older than the stream keeps, or not announced yet): "
        "the record's time is shown",
    )


def test_an_unsettled_end_and_an_intake_without_events_are_noted() -> None:
    found = timeline([], completed_record(charged_micros=None), events_readable=False)

    assert found.notes == (
        "this intake reads no job events: every step is the record's",
        "the charge is not settled yet (pricing_guard settles it after the end)",
    )


def test_stream_order_is_kept_even_when_clocks_disagree() -> None:
    skewed = [EVENTS[0], Happened(2, "admitted", at(-0.5))]  # another host's clock, behind

    found = timeline(skewed, completed_record(status="admitted", history={"accepted": at(0)}))

    assert [s.step for s in found.steps] == ["accepted", "admitted"]
    assert found.steps[1].since_previous_seconds == -0.51  # shown as it is, never hidden


def test_trace_of_reads_a_traceparent() -> None:
    assert trace_of("00-" + "ab" * 16 + "-" + "cd" * 8 + "-01") == "ab" * 16
    assert trace_of("00-" + "0" * 32 + "-" + "cd" * 8 + "-01") is None
    assert trace_of("garbage") is None
    assert trace_of(None) is None


def test_emitters_are_the_services_allowed_to_publish_each_kind() -> None:
    for kind, names in EMITTERS.items():
        for name in names:
            assert kind in {e.kind for e in SERVICES[name].emits}
    assert EMITTERS["failed"] == tuple(SERVICES)  # every service may fail a job
    for state, writer in WRITERS.items():  # a state's writer may emit its event, if it has one
        event = {"submitting": None, "storing": None, "generating": "progress",
                 "cancelling": "cancel_requested"}.get(state, state)  # fmt: skip
        if event is not None:
            assert writer in EMITTERS[event], state

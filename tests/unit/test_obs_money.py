"""The pure parts of the job and money observations: what a move is, its labels, the time in
the state left, where a settlement's micro-dollars went, budget ratios and labels, intake's
refusal labels (bounded whatever a request names), the messaging spans' attributes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.msg import Msg

from services.intake.usecases import refusal_labels
from services.pricing_guard.budgets import Limit, Usage
from services.pricing_guard.observe import Moved, budget_labels, ratios, settlement_of
from services.pricing_guard.records import ReservationRecord
from shared.consume import Handling, consumer_attributes
from shared.contracts import JobRecordV1, JobSpec, JobStatus
from shared.contracts.events import JobAdmittedV1
from shared.contracts.lifecycle import admit, count_error, fail, report_progress
from shared.messaging import send_attributes
from shared.moves import moved, seconds_in_state, transition_labels
from shared.registry import load_registry

AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p", kind="remix")


def accepted() -> JobRecordV1:
    return JobRecordV1(
        job_id="job_" + "a" * 32, tenant="acme", status=JobStatus.ACCEPTED, spec=SPEC,
        idempotency_key="k", request_hash="h", history={"accepted": AT},
    )  # fmt: skip


def test_a_move_is_a_new_job_or_another_status_never_bookkeeping() -> None:
    record = accepted()
    assert moved(None, record)
    assert moved(record, admit(record, AT, cost_micros=1))
    assert not moved(record, count_error(record, "pricing_guard"))
    generating = record.model_copy(update={"status": JobStatus.GENERATING, "progress": 10})
    assert not moved(generating, report_progress(generating, AT, progress=20))


def test_transition_labels_name_the_job_and_an_ends_reason_only() -> None:
    record = accepted()
    assert transition_labels(None, record, "simulator") == {
        "from_state": "", "to_state": "accepted", "tenant": "acme", "provider": "simulator",
        "model": "sora-2", "kind": "remix", "reason": "",
    }  # fmt: skip
    ended = fail(record, AT, reason="poison_message", detail="d", stage="submitter")
    labels = transition_labels(record, ended, "openai")
    assert (labels["from_state"], labels["to_state"], labels["reason"]) == (
        "accepted", "failed", "poison_message",
    )  # fmt: skip
    assert "job_id" not in labels
    assert all(isinstance(v, str) for v in labels.values())


def test_time_in_a_state_runs_from_its_entry_in_the_history() -> None:
    record = accepted()
    assert seconds_in_state(record, AT + timedelta(seconds=7.5)) == 7.5
    assert seconds_in_state(record, AT - timedelta(seconds=3)) == 0.0  # a clock behind
    assert seconds_in_state(record.model_copy(update={"history": {}}), AT) is None


def reservation(
    state: Any, estimate: int = 400_000, charged: int | None = None
) -> ReservationRecord:
    return ReservationRecord(
        tenant="acme", job_id="job_" + "b" * 32, model="sora-2", size="1280x720", seconds=4,
        estimate_micros=estimate, slots=[], reserved_at=AT, state=state,
        charged_micros=charged,
    )  # fmt: skip


def test_a_settlement_moves_the_whole_estimate_somewhere() -> None:
    assert settlement_of(reservation("charged", charged=300_000)) == Moved(300_000, 100_000, 0)
    assert settlement_of(reservation("charged", charged=500_000)) == Moved(500_000, 0, 0)
    assert settlement_of(reservation("released", charged=0)) == Moved(0, 400_000, 0)
    assert settlement_of(reservation("disputed")) == Moved(0, 0, 400_000)
    assert settlement_of(reservation("reserved")) == Moved()


def test_budget_ratios_and_labels() -> None:
    usage = Usage(admitted=900, reserved=300, settled=400, released=100, disputed=100)
    assert ratios(usage, Limit(1000, 750)) == (0.8, 0.75)
    assert ratios(usage, Limit(1000)) == (0.8, None)
    assert ratios(Usage(), Limit(0)) == (1.0, None)  # a zero budget is full
    assert budget_labels("global", "daily") == {"scope": "global", "tenant": "", "window": "daily"}
    assert budget_labels("tenant:acme", "monthly") == {
        "scope": "tenant", "tenant": "acme", "window": "monthly",
    }  # fmt: skip


def test_a_refusal_at_the_edge_is_labelled_with_bounded_values_only() -> None:
    simulator = load_registry().provider("simulator")
    named = refusal_labels(simulator, {"model": "sora-2", "kind": "extend"}, "acme", "invalid")
    assert named == {
        "from_state": "", "to_state": "rejected", "tenant": "acme", "provider": "simulator",
        "model": "sora-2", "kind": "extend", "reason": "invalid",
    }  # fmt: skip
    wild = refusal_labels(simulator, {"model": "x" * 500, "kind": ["?"]}, "NOT A TENANT", "bad")
    assert (wild["model"], wild["kind"], wild["tenant"]) == ("", "", "_unknown")
    assert refusal_labels(simulator, b"\xff", "acme", "invalid_json")["model"] == ""


def test_the_consumer_span_attributes_follow_the_messaging_conventions() -> None:
    template = JobAdmittedV1.subject_filter()
    handling = Handling(
        template,
        "submitter--job-admitted-v1",
        "CLIPLINE_JOBS",
        None,  # type: ignore[arg-type]
        1,
        1,
        "_INBOX.",
        None,
        lambda: None,  # type: ignore[arg-type,return-value]
    )
    subject = "clipline.job.admitted.v1.acme.job_" + "c" * 32
    raw = Msg(
        None,  # type: ignore[arg-type]
        subject=subject,
        reply="$JS.ACK.CLIPLINE_JOBS.submitter--job-admitted-v1.3.812.40.1765108800000000000.0",
    )
    assert consumer_attributes(handling, raw) == {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": subject,
        "messaging.destination.template": template,
        "messaging.consumer.group.name": "submitter--job-admitted-v1",
        "messaging.message.id": "812",
        "clipline.delivery.attempt": 3,
        "clipline.event.kind": "admitted",
        "clipline.tenant": "acme",
        "clipline.job.id": "job_" + "c" * 32,
    }
    core = Msg(None, subject="clipline.requests.v1.acme", reply="_INBOX.x")  # type: ignore[arg-type]
    assert "messaging.message.id" not in consumer_attributes(handling, core)


def test_the_producer_span_names_the_event_and_its_job() -> None:
    event = JobAdmittedV1(
        event_id="evt_1", occurred_at=AT, job_id="job_" + "d" * 32, tenant="acme",
        cost_micros=1, spec=SPEC,
    )  # fmt: skip
    sent = send_attributes(event)
    assert sent["messaging.operation.type"] == "send"
    assert sent["messaging.destination.name"] == event.subject
    assert sent["messaging.destination.template"] == JobAdmittedV1.subject_filter()
    assert (sent["clipline.job.id"], sent["clipline.tenant"]) == (event.job_id, "acme")

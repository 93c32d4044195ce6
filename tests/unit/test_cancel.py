"""Cancel, as pure decisions: the lifecycle steps, the submitter's plan, the bill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.pricing_guard.budgets import Charge, Dispute, Release
from services.pricing_guard.domain import Ending, bill
from services.submitter.domain import ATTEMPT_LEASE_SECONDS, Cancel, InFlight, plan
from shared.contracts import IllegalTransition, JobRecordV1, JobSpec, JobStatus
from shared.contracts import lifecycle as lc

S = JobStatus
AT = datetime(2026, 12, 1, tzinfo=UTC)
LATER = AT + timedelta(seconds=2)


def admitted() -> JobRecordV1:
    record = JobRecordV1(
        job_id="job_" + "1" * 32, tenant="acme", status=S.ACCEPTED,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k", request_hash="h", history={S.ACCEPTED.value: AT},
    )  # fmt: skip
    return lc.admit(record, AT, cost_micros=400_000)


def in_flight() -> JobRecordV1:
    """Asked to cancel while its create is in flight."""
    return lc.request_cancel(lc.begin_submit(admitted(), AT), LATER)


def test_cancel_before_submission_says_nothing_was_created() -> None:
    done = lc.cancel(lc.request_cancel(admitted(), AT), LATER, stage="submitter")
    assert (done.status, done.reason, done.stage) == (S.CANCELLED, "cancelled", "submitter")
    assert done.detail == "cancelled before submission: nothing was created upstream"
    assert {"cancelling", "cancelled"} <= done.history.keys()


def test_a_create_answering_after_the_cancel_is_recorded_as_the_sunk_cost() -> None:
    done = lc.cancel(in_flight(), LATER, stage="submitter", upstream_id="video_9")
    assert (done.upstream_id, done.create_outcome) == ("video_9", lc.CreateOutcome.CREATED)
    assert done.attempt_alive_at is None
    assert "video_9" in (done.detail or "")
    assert "sunk cost" in (done.detail or "")


def test_an_upstream_id_already_recorded_is_kept() -> None:
    submitted = lc.mark_submitted(lc.begin_submit(admitted(), AT), AT, upstream_id="video_1")
    done = lc.cancel(lc.request_cancel(submitted, LATER), LATER, stage="poller", upstream_id="x")
    assert done.upstream_id == "video_1"
    generated = lc.mark_generated(submitted, AT, produced_seconds=4)
    stored = lc.cancel(lc.request_cancel(generated, LATER), LATER, stage="storage")
    assert "not stored" in (stored.detail or "")


def test_a_create_of_unknown_fate_is_named_in_the_detail() -> None:
    done = lc.cancel(in_flight(), LATER, stage="submitter")
    assert done.create_outcome == lc.CreateOutcome.IN_FLIGHT
    assert "unknown" in (done.detail or "")


def test_a_cancelling_job_keeps_its_attempts_lease_and_outcome_until_the_create_answers() -> None:
    cancelling = in_flight()
    n = cancelling.submit_attempts
    renewed = lc.renew_attempt(cancelling, LATER, attempt=n)
    assert (renewed.status, renewed.attempt_alive_at) == (S.CANCELLING, LATER)
    ended = lc.end_attempt(cancelling, LATER, attempt=n, outcome=lc.CreateOutcome.NOT_SENT)
    assert (ended.status, ended.attempt_alive_at, ended.create_may_exist) == (
        S.CANCELLING, None, False,
    )  # fmt: skip
    with pytest.raises(IllegalTransition):  # an ended attempt is not renewed again
        lc.renew_attempt(ended, LATER, attempt=n)
    with pytest.raises(IllegalTransition):  # nor does an older attempt touch it
        lc.end_attempt(cancelling, LATER, attempt=n - 1, outcome=lc.CreateOutcome.NOT_SENT)
    with pytest.raises(IllegalTransition):  # no new create starts once cancelling
        lc.begin_submit(cancelling, LATER)


@pytest.mark.parametrize("status", [S.CANCELLING, S.CANCELLED, S.COMPLETED, S.FAILED])
def test_cancel_is_asked_once_and_only_of_a_live_job(status: JobStatus) -> None:
    record = admitted().model_copy(update={"status": status})
    with pytest.raises(IllegalTransition):
        lc.request_cancel(record, AT)


def test_the_submitter_waits_for_a_live_create_and_cancels_otherwise() -> None:
    def cancelling(outcome: str | None, age: float | None) -> object:
        return plan("cancelling", None, False, waited=1.0, deadline=60.0, attempt_age=age,
                    outcome=outcome)  # fmt: skip

    assert cancelling("in_flight", 1.0) == InFlight(ATTEMPT_LEASE_SECONDS - 1.0)
    assert cancelling("in_flight", ATTEMPT_LEASE_SECONDS + 1) == Cancel()  # its process died
    assert cancelling("in_flight", None) == Cancel()
    for outcome in (None, "not_sent", "refused", "server_error", "no_answer", "created"):
        assert cancelling(outcome, None) == Cancel()
    assert plan("cancelling", "video_1", False, waited=1, deadline=60) == Cancel()
    assert plan("cancelling", "video_1", False, waited=1e9, deadline=60) == Cancel()


def ending(reached: set[str], *, may_exist: bool | None, upstream: bool = False) -> Ending:
    return Ending(
        "cancelled", "cancelled", "submitter", frozenset(reached | {"cancelling"}), 400_000, 4,
        None, may_exist, upstream,
    )  # fmt: skip


def test_the_bill_of_a_cancelled_job_follows_what_the_upstream_made() -> None:
    assert isinstance(bill(ending({"admitted"}, may_exist=None)), Release)
    assert isinstance(bill(ending({"submitting"}, may_exist=False)), Release)  # 429, 4xx
    sunk = bill(ending({"submitting"}, may_exist=True, upstream=True))  # answered after it
    assert sunk == Charge(400_000, "cancelled after submission: sunk cost")
    assert bill(ending({"submitted"}, may_exist=True)) == sunk
    assert isinstance(bill(ending({"submitting"}, may_exist=True)), Dispute)  # fate unknown
    generated = bill(ending({"submitted", "generated"}, may_exist=True))
    assert generated == Charge(400_000, "4 s produced")

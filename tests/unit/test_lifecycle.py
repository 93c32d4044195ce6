"""Job lifecycle: every step from every allowed state, and every other move refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.pricing_guard.domain import UPSTREAM_EXISTS
from shared.contracts import AssetRef, IllegalTransition, JobRecordV1, JobSpec, JobStatus
from shared.contracts import lifecycle as lc
from shared.contracts.lifecycle import LIVE, STEPS, TERMINAL, UPSTREAM_STARTED

S = JobStatus
T0 = datetime(2026, 11, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
ASSET = AssetRef(
    variant="video", bucket="b", key="acme/job/video.mp4", size_bytes=3, sha256="0" * 64,
    content_type="video/mp4",
)  # fmt: skip
END = {"reason": "because", "detail": "one human sentence", "stage": "poller"}

Apply = Callable[[JobRecordV1, datetime], JobRecordV1]
APPLY: dict[str, Apply] = {
    "admit": lambda r, at: lc.admit(r, at, cost_micros=400_000),
    "reject": lambda r, at: lc.reject(r, at, **END),
    "begin_submit": lc.begin_submit,
    "retry_submit": lambda r, at: lc.retry_submit(r, at, attempt=r.submit_attempts),
    "mark_submitted": lambda r, at: lc.mark_submitted(r, at, upstream_id="video_1"),
    "report_progress": lambda r, at: lc.report_progress(r, at, progress=r.progress + 1),
    "mark_generated": lc.mark_generated,
    "begin_store": lc.begin_store,
    "complete": lambda r, at: lc.complete(r, at, assets=[ASSET]),
    "request_cancel": lc.request_cancel,
    "cancel": lambda r, at: lc.cancel(r, at, detail="a client asked", stage="api"),
    "fail": lambda r, at: lc.fail(r, at, **END),
    "time_out": lambda r, at: lc.time_out(r, at, **END),
}
ALLOWED = sorted((source, name) for name, step in STEPS.items() for source in step.sources)
ILLEGAL = sorted(
    (state, name) for name, step in STEPS.items() for state in S if state not in step.sources
)


def record(status: JobStatus = S.ACCEPTED, **changes: object) -> JobRecordV1:
    """A record in `status` that got there at T0."""
    return JobRecordV1(
        job_id="job_" + "0" * 32,
        tenant="acme",
        status=status,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k",
        request_hash="h",
        history={S.ACCEPTED.value: T0, status.value: T0},
        **changes,
    )


def test_every_step_has_a_typed_function_and_a_case_here() -> None:
    assert set(APPLY) == set(STEPS)
    for name in STEPS:
        assert callable(getattr(lc, name))


def test_the_pairs_cover_every_state_and_step() -> None:
    assert len(ALLOWED) + len(ILLEGAL) == len(S) * len(STEPS)
    assert not set(ALLOWED) & set(ILLEGAL)


@pytest.mark.parametrize(("source", "name"), ALLOWED)
def test_every_step_moves_from_each_allowed_source(source: JobStatus, name: str) -> None:
    before = record(source)
    after = APPLY[name](before, T1)

    target = STEPS[name].target
    assert after.status == target
    # The first arrival in a state is kept; a repeated step (a retried attempt) keeps it too.
    assert after.history[target.value] == (T0 if target == source else T1)
    assert {k: v for k, v in after.history.items() if k != target.value} == {
        k: v for k, v in before.history.items() if k != target.value
    }
    assert (after.job_id, after.tenant, after.spec) == (before.job_id, before.tenant, before.spec)


@pytest.mark.parametrize(("state", "name"), ILLEGAL)
def test_every_other_move_is_refused(state: JobStatus, name: str) -> None:
    before = record(state)
    with pytest.raises(IllegalTransition) as refused:
        APPLY[name](before, T1)
    assert refused.value.target == STEPS[name].target
    assert name in str(refused.value)
    assert before.status == state  # records are frozen: nothing half-moved


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_never_change(state: JobStatus) -> None:
    done = record(state, reason="r", detail="d", stage="s")
    for name in STEPS:
        with pytest.raises(IllegalTransition):
            APPLY[name](done, T1)
    with pytest.raises(IllegalTransition):
        lc.count_error(done, "poller")
    assert not any(state in step.sources for step in STEPS.values())


def test_every_live_state_can_still_end() -> None:
    assert frozenset(S) - TERMINAL == LIVE
    assert STEPS["fail"].sources == LIVE
    assert UPSTREAM_STARTED <= LIVE
    for state in LIVE:
        assert lc.fail(record(state), T1, **END).terminal


def reachable(start: JobStatus, avoiding: JobStatus | None = None) -> set[JobStatus]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for step in STEPS.values():
            if state in step.sources and step.target not in seen and step.target != avoiding:
                seen.add(step.target)
                todo.append(step.target)
    return seen


@pytest.mark.parametrize(
    "milestone", [S.ADMITTED, S.SUBMITTING, S.SUBMITTED, S.GENERATED, S.STORING]
)
def test_completion_passes_every_milestone(milestone: JobStatus) -> None:
    assert S.COMPLETED in reachable(S.ACCEPTED)
    assert S.COMPLETED not in reachable(S.ACCEPTED, avoiding=milestone)


def test_rejection_happens_only_before_any_upstream_spend() -> None:
    assert STEPS["reject"].sources == {S.ACCEPTED}
    assert S.ACCEPTED not in STEPS["time_out"].sources  # no deadline runs before admission
    assert reachable(S.ACCEPTED) == set(S)


def test_steps_carry_their_fields() -> None:
    admitted = lc.admit(record(), T1, cost_micros=400_000)
    assert admitted.cost_micros == 400_000
    submitted = lc.mark_submitted(record(S.SUBMITTING), T1, upstream_id="video_9")
    assert submitted.upstream_id == "video_9"
    generated = lc.mark_generated(record(S.GENERATING, progress=40), T1)
    assert generated.progress == 100
    completed = lc.complete(record(S.STORING), T1, assets=[ASSET])
    assert completed.assets == [ASSET]


def test_begin_submit_counts_attempts_and_stamps_the_last_one() -> None:
    first = lc.begin_submit(record(S.ADMITTED), T0)
    assert (first.submit_attempts, first.last_attempt_at) == (1, T0)
    second = lc.begin_submit(first, T1)
    assert (second.status, second.submit_attempts, second.last_attempt_at) == (S.SUBMITTING, 2, T1)
    assert second.history[S.SUBMITTING.value] == T0


def test_progress_only_rises_and_stays_below_done() -> None:
    generating = record(S.GENERATING, progress=40)
    for lower in (0, 39, 40):
        with pytest.raises(IllegalTransition) as refused:
            lc.report_progress(generating, T1, progress=lower)
        assert refused.value.target == S.GENERATING  # the caller may find it already there
    assert lc.report_progress(generating, T1, progress=41).progress == 41
    assert lc.report_progress(generating, T1, progress=250).progress == 99  # 100 is `generated`
    first = lc.report_progress(record(S.SUBMITTED), T1, progress=0)
    assert (first.status, first.progress) == (S.GENERATING, 0)
    assert lc.report_progress(record(S.SUBMITTED), T1, progress=-5).progress == 0


@pytest.mark.parametrize(
    ("name", "source", "status"),
    [
        ("reject", S.ACCEPTED, S.REJECTED),
        ("fail", S.GENERATING, S.FAILED),
        ("time_out", S.SUBMITTING, S.TIMED_OUT),
    ],
)
def test_terminal_outcomes_keep_reason_detail_and_stage(
    name: str, source: JobStatus, status: JobStatus
) -> None:
    ended = APPLY[name](record(source), T1)
    assert ended.status == status
    assert ended.terminal
    assert (ended.reason, ended.detail, ended.stage) == (END["reason"], END["detail"], "poller")
    assert ended.history[status.value] == T1


def test_cancel_records_its_reason_and_who_asked() -> None:
    cancelling = lc.request_cancel(record(S.GENERATING), T0)
    cancelled = lc.cancel(cancelling, T1, detail="the client asked", stage="api")
    assert cancelled.status == S.CANCELLED
    assert (cancelled.reason, cancelled.detail, cancelled.stage) == (
        "cancelled",
        "the client asked",
        "api",
    )


def test_terminal_detail_is_bounded() -> None:
    ended = lc.fail(record(S.SUBMITTED), T1, reason="r", detail="x" * 5000, stage="s")
    assert ended.detail == "x" * 1000


def test_count_error_counts_per_stage_and_moves_nothing() -> None:
    r = record(S.SUBMITTED)
    once = lc.count_error(r, "poller")
    twice = lc.count_error(lc.count_error(once, "storage"), "poller")
    assert once.errors == {"poller": 1}
    assert twice.errors == {"poller": 2, "storage": 1}
    assert (twice.status, twice.history) == (r.status, r.history)


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_settle_once_and_only_when_terminal(state: JobStatus) -> None:
    settled = lc.settle(record(state), charged_micros=400_000)
    assert settled.charged_micros == 400_000
    assert settled.status == state
    with pytest.raises(IllegalTransition):
        lc.settle(settled, charged_micros=0)
    assert lc.settle(record(state), charged_micros=0).charged_micros == 0  # zero is a charge


@pytest.mark.parametrize("state", sorted(LIVE))
def test_a_live_job_is_not_settled(state: JobStatus) -> None:
    with pytest.raises(IllegalTransition):
        lc.settle(record(state), charged_micros=1)


def test_attempt_lease_is_renewed_and_ended_only_while_submitting() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    submitting = lc.begin_submit(lc.admit(record(S.ACCEPTED), at, cost_micros=1), at)
    assert submitting.attempt_alive_at == at
    later = at + timedelta(seconds=2)
    mine = submitting.submit_attempts
    assert lc.renew_attempt(submitting, later, attempt=mine).attempt_alive_at == later
    ended = lc.end_attempt(submitting, later, attempt=mine, outcome=lc.CreateOutcome.NO_ANSWER)
    assert (ended.status, ended.attempt_alive_at) == (S.SUBMITTING, None)
    back = lc.retry_submit(submitting, later, attempt=mine)
    assert (back.status, back.attempt_alive_at) == (S.ADMITTED, None)
    # An attempt overtaken by a newer one touches nothing of it.
    newer = lc.begin_submit(submitting, later)
    for act in (lc.renew_attempt, lc.retry_submit):
        with pytest.raises(IllegalTransition):
            act(newer, later, attempt=mine)
    with pytest.raises(IllegalTransition):
        lc.end_attempt(newer, later, attempt=mine, outcome=lc.CreateOutcome.NOT_SENT)
    for other in (S.ADMITTED, S.SUBMITTED, S.FAILED):
        with pytest.raises(IllegalTransition):
            lc.renew_attempt(record(other), later, attempt=0)
        with pytest.raises(IllegalTransition):
            lc.end_attempt(record(other), later, attempt=0, outcome=lc.CreateOutcome.NOT_SENT)


def test_the_record_says_whether_a_create_may_exist_after_each_attempt_outcome() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    admitted = lc.admit(record(S.ACCEPTED), at, cost_micros=1)
    assert admitted.create_may_exist is None  # no attempt: the record does not say
    submitting = lc.begin_submit(admitted, at)
    assert submitting.create_outcome == lc.CreateOutcome.IN_FLIGHT
    assert submitting.create_may_exist  # from before the POST: a crash may leave one behind
    n = submitting.submit_attempts
    may_exist = {
        outcome: lc.end_attempt(submitting, at, attempt=n, outcome=outcome).create_may_exist
        for outcome in lc.ENDED_ATTEMPT
    }
    assert may_exist == {
        lc.CreateOutcome.NOT_SENT: False,
        lc.CreateOutcome.REFUSED: False,
        lc.CreateOutcome.SERVER_ERROR: True,
        lc.CreateOutcome.NO_ANSWER: True,
    }
    back = lc.retry_submit(submitting, at, attempt=n)  # a 429
    assert (back.create_outcome, back.create_may_exist) == (lc.CreateOutcome.REFUSED, False)
    assert "submitting" in back.history  # what the history alone cannot tell
    created = lc.mark_submitted(submitting, at, upstream_id="video_1")
    assert created.create_outcome == lc.CreateOutcome.CREATED
    assert created.create_may_exist
    # A newer attempt after a refused one may create again.
    assert lc.begin_submit(back, at).create_may_exist
    with pytest.raises(ValueError, match="not how an attempt ends"):
        lc.end_attempt(submitting, at, attempt=n, outcome=lc.CreateOutcome.CREATED)


def test_check_move_allows_steps_and_bookkeeping_and_refuses_the_rest() -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    accepted = record(S.ACCEPTED)
    lc.check_move(None, accepted)
    lc.check_move(accepted, lc.admit(accepted, at, cost_micros=1))
    lc.check_move(accepted, lc.count_error(accepted, "x"))
    with pytest.raises(IllegalTransition):
        lc.check_move(None, record(S.SUBMITTED))
    with pytest.raises(IllegalTransition):
        lc.check_move(accepted, accepted.model_copy(update={"status": S.COMPLETED}))
    done = record(S.COMPLETED)
    lc.check_move(done, lc.settle(done, charged_micros=5))
    with pytest.raises(IllegalTransition):
        lc.check_move(done, done.model_copy(update={"reason": "rewritten"}))


def test_pricing_guards_copy_of_the_upstream_states_matches_the_lifecycle() -> None:
    assert {s.value for s in UPSTREAM_STARTED} == UPSTREAM_EXISTS


def test_keep_assets_records_stored_variants_of_a_storing_job_only() -> None:
    thumb = ASSET.model_copy(update={"variant": "thumbnail", "key": "acme/job/thumbnail.webp"})
    again = ASSET.model_copy(update={"sha256": "1" * 64})
    kept = lc.keep_assets(record(S.STORING, assets=[ASSET]), [thumb, again])
    assert kept.status == S.STORING
    assert kept.assets == [again, thumb]  # one per variant, the latest kept
    lc.check_move(record(S.STORING), kept)  # bookkeeping, not a move
    for status in set(S) - {S.STORING}:
        with pytest.raises(IllegalTransition):
            lc.keep_assets(record(status), [ASSET])

"""Job lifecycle: the record only moves forward."""

from datetime import UTC, datetime, timedelta

from shared.contracts import JobRecordV1, JobSpec, JobStatus, transition
from shared.contracts.jobs import settle

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def record(status: JobStatus = JobStatus.ACCEPTED, progress: int = 0) -> JobRecordV1:
    return JobRecordV1(
        job_id="job_" + "0" * 32,
        tenant="acme",
        status=status,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k",
        request_hash="h",
        progress=progress,
    )


def test_forward_moves_record_history_once() -> None:
    r = transition(record(), JobStatus.ADMITTED, T0, cost_micros=400_000)
    assert r is not None
    assert r.status == JobStatus.ADMITTED
    assert r.cost_micros == 400_000
    assert r.history["admitted"] == T0


def test_backward_and_repeated_moves_are_refused() -> None:
    submitted = record(JobStatus.SUBMITTED)
    assert transition(submitted, JobStatus.ADMITTED, T0) is None
    assert transition(submitted, JobStatus.SUBMITTED, T0) is None


def test_progress_only_rises() -> None:
    r = record(JobStatus.GENERATING, progress=40)
    assert transition(r, JobStatus.GENERATING, T0, progress=30) is None
    assert transition(r, JobStatus.GENERATING, T0, progress=40) is None
    later = transition(r, JobStatus.GENERATING, T0 + timedelta(seconds=1), progress=41)
    assert later is not None
    assert later.progress == 41


def test_terminal_is_final() -> None:
    done = record(JobStatus.COMPLETED)
    for status in JobStatus:
        assert transition(done, status, T0) is None
    failed = transition(record(JobStatus.GENERATING), JobStatus.FAILED, T0, reason="x")
    assert failed is not None
    assert failed.terminal


def test_settle_once_and_only_when_terminal() -> None:
    assert settle(record(JobStatus.GENERATING), 1) is None
    settled = settle(record(JobStatus.COMPLETED), 400_000)
    assert settled is not None
    assert settled.charged_micros == 400_000
    assert settle(settled, 0) is None

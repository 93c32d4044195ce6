"""The first decision of every stage (shared.contracts.stage.screen): an event acts only on a
record that exists and agrees with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.poller.follow import upstream_expiry
from shared.contracts import (
    JobAcceptedV1,
    JobAdmittedV1,
    JobCancelRequestedV1,
    JobGeneratedV1,
    JobRecordV1,
    JobSpec,
    JobStatus,
    JobSubmittedV1,
)
from shared.contracts.events import Event
from shared.contracts.lifecycle import mark_generated
from shared.contracts.stage import (
    Cancelling,
    Disagrees,
    Ended,
    Live,
    Unknown,
    disagreement,
    screen,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="a lighthouse")
OTHER = JobSpec(model="sora-2-pro", size="1280x720", seconds=8, prompt="another")


def record(status: JobStatus = JobStatus.SUBMITTED, **changes: object) -> JobRecordV1:
    fields: dict[str, object] = {
        "job_id": "job_1", "tenant": "acme", "status": status, "spec": SPEC,
        "idempotency_key": "k", "request_hash": "h", "cost_micros": 400_000,
        "upstream_id": "video_1", "history": {"accepted": NOW},
    }  # fmt: skip
    return JobRecordV1.model_validate(fields | changes)


def event(kind: type[Event], **fields: object) -> Event:
    common = {"event_id": "evt_1", "occurred_at": NOW, "job_id": "job_1", "tenant": "acme"}
    return kind.model_validate(common | fields)


def submitted(**fields: object) -> Event:
    facts = {"spec": SPEC, "cost_micros": 400_000, "upstream_id": "video_1"}
    return event(JobSubmittedV1, **(facts | fields))


def test_no_record_is_unknown() -> None:
    assert screen(None, submitted()) == Unknown()


def test_agreeing_facts_on_a_live_record_let_the_stage_decide() -> None:
    live = record()
    assert screen(live, submitted()) == Live(live)


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"spec": OTHER}, ("spec",)),
        ({"cost_micros": 2_400_000}, ("cost_micros",)),
        ({"upstream_id": "video_someone_elses"}, ("upstream_id",)),
        ({"spec": OTHER, "upstream_id": "video_2"}, ("spec", "upstream_id")),
    ],
)
def test_any_fact_that_is_not_the_records_is_a_disagreement(
    fields: dict[str, object], what: tuple[str, ...]
) -> None:
    assert screen(record(), submitted(**fields)) == Disagrees(what)


def test_a_tenant_or_job_that_is_not_the_records_disagrees() -> None:
    """The store is keyed by (tenant, job); a record under another key is never acted on."""
    assert screen(record(tenant="other"), submitted()) == Disagrees(("tenant",))


def test_a_fact_the_record_does_not_have_yet_is_a_disagreement() -> None:
    """An `admitted` claiming a cost for a job pricing_guard never admitted."""
    unpriced = record(JobStatus.ACCEPTED, cost_micros=None, upstream_id=None)
    forged = event(JobAdmittedV1, spec=SPEC, cost_micros=400_000)
    assert screen(unpriced, forged) == Disagrees(("cost_micros",))


def test_a_fact_the_event_leaves_out_is_no_claim() -> None:
    generated = mark_generated(record(), NOW, produced_seconds=4, expires_at=NOW)
    quiet = event(JobGeneratedV1, upstream_id="video_1", cost_micros=400_000)
    assert disagreement(generated, quiet) == ()
    late = event(
        JobGeneratedV1, upstream_id="video_1", cost_micros=400_000,
        expires_at=NOW + timedelta(days=1),
    )  # fmt: skip
    assert disagreement(generated, late) == ("expires_at",)


def test_an_event_without_facts_only_names_the_job() -> None:
    assert disagreement(record(), event(JobCancelRequestedV1)) == ()


def test_the_accepted_events_spec_and_key_are_checked() -> None:
    accepted = record(JobStatus.ACCEPTED, cost_micros=None, upstream_id=None)
    forged = event(JobAcceptedV1, spec=OTHER, idempotency_key="other")
    assert screen(accepted, forged) == Disagrees(("spec", "idempotency_key"))


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_an_ended_job_is_ended_whatever_the_event(status: JobStatus) -> None:
    ended = record(status)
    assert screen(ended, submitted()) == Ended(ended)


def test_a_disagreeing_event_about_an_ended_job_is_still_a_disagreement() -> None:
    """Nothing is announced again on the word of a forged event."""
    assert screen(record(JobStatus.COMPLETED), submitted(upstream_id="x")) == Disagrees(
        ("upstream_id",)
    )


def test_a_cancelling_job_is_cancelling() -> None:
    asked = record(JobStatus.CANCELLING)
    assert screen(asked, submitted()) == Cancelling(asked)


def test_expiry_lives_on_the_record_from_generation() -> None:
    generated = mark_generated(record(), NOW, produced_seconds=4, expires_at=NOW)
    assert (generated.status, generated.expires_at, generated.progress) == (
        JobStatus.GENERATED, NOW, 100,
    )  # fmt: skip


def test_a_record_written_before_expires_at_existed_still_reads() -> None:
    old = record().model_dump(mode="json")
    del old["expires_at"]
    assert JobRecordV1.model_validate(old).expires_at is None


def test_the_upstreams_expiry_is_recorded_only_when_it_is_a_time() -> None:
    assert upstream_expiry(None) is None
    assert upstream_expiry(int(NOW.timestamp())) == NOW
    assert upstream_expiry(10**20) is None  # not a time: recorded as unknown, never a crash

"""Event contracts: subjects, derived ids, tolerant reading, and frozen schemas."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.contracts import (
    EVENT_TYPES,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobProgressV1,
    JobRejectedV1,
    JobSpec,
    JobSubmittedV1,
)
from shared.contracts.ids import derived_event_id, fact_event_id, job_id_for
from shared.contracts.schema_files import SCHEMA_DIR, rendered

SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="a cat")


def accepted() -> JobAcceptedV1:
    return JobAcceptedV1(
        event_id="evt_1", occurred_at=datetime.now(UTC), job_id="job_1", tenant="acme",
        spec=SPEC, idempotency_key="k",
    )  # fmt: skip


def test_subjects_carry_kind_version_tenant_and_job() -> None:
    assert accepted().subject == "clipline.job.accepted.v1.acme.job_1"
    assert JobCompletedV1.subject_filter("acme") == "clipline.job.completed.v1.acme.*"
    assert JobSubmittedV1.durable("poller") == "poller--job-submitted-v1"


def test_a_fact_has_one_id_however_it_is_reached() -> None:
    by_event = JobAdmittedV1.fact(accepted(), spec=SPEC, cost_micros=1)
    by_other_cause = JobAdmittedV1.fact(
        accepted().model_copy(update={"event_id": "evt_2"}), spec=SPEC, cost_micros=2
    )
    assert by_event.event_id == by_other_cause.event_id == fact_event_id("job_1", "admitted")
    assert (by_event.job_id, by_event.tenant) == ("job_1", "acme")
    other_job = accepted().model_copy(update={"job_id": "job_2"})
    assert JobAdmittedV1.fact(other_job, spec=SPEC, cost_micros=1).event_id != by_event.event_id
    rejected = JobRejectedV1.fact(accepted(), reason="r", detail="d", stage="s")
    assert rejected.event_id != by_event.event_id  # one id per (job, kind)


def test_keyed_facts_differ_by_key() -> None:
    def progress(p: int) -> JobProgressV1:
        return JobProgressV1.fact(
            accepted(), key=str(p), upstream_id="v", upstream_status="in_progress", progress=p
        )

    assert (
        progress(40).event_id == progress(40).event_id == fact_event_id("job_1", "progress", "40")
    )
    assert progress(40).event_id != progress(41).event_id


def test_caused_by_derives_its_id_from_the_cause() -> None:
    a = JobRejectedV1.caused_by("acme:msg-1", accepted(), reason="r", detail="d", stage="s")
    b = JobRejectedV1.caused_by("acme:msg-1", accepted(), reason="r", detail="e", stage="s")
    assert a.event_id == b.event_id == derived_event_id("acme:msg-1", "rejected", "")
    assert (a.job_id, a.tenant) == ("job_1", "acme")
    other = JobRejectedV1.caused_by("acme:msg-2", accepted(), reason="r", detail="d", stage="s")
    assert other.event_id != a.event_id
    # not a fact: a refusal of one message never shares the id of the job's own rejection
    assert a.event_id != JobRejectedV1.fact(accepted(), reason="r", detail="d", stage="s").event_id


def test_job_ids_are_deterministic_per_tenant_and_key() -> None:
    assert job_id_for("acme", "k1") == job_id_for("acme", "k1")
    assert job_id_for("acme", "k1") != job_id_for("other", "k1")
    assert job_id_for("acme", "k1").startswith("job_")


def test_tolerant_reader_and_frozen() -> None:
    data = accepted().model_dump(mode="json") | {"added_later": 1}
    event = JobAcceptedV1.model_validate(data)
    assert event == accepted().model_copy(update={"occurred_at": event.occurred_at})
    with pytest.raises(ValidationError):
        event.tenant = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        JobAcceptedV1.model_validate(data | {"schema_version": 2})


def test_every_event_kind_is_distinct() -> None:
    kinds = [e.kind for e in EVENT_TYPES]
    assert len(kinds) == len(set(kinds))


def test_committed_schemas_match_the_code() -> None:
    """A contract change needs a new version (a new class), not an edit of the old one."""
    for name, text in rendered().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{name} missing: run python -m shared.contracts.schema_files"
        assert path.read_text() == text, f"{name} changed: add a new version instead"

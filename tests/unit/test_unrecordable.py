"""Which job a delivery's subject names (or why none whose record could be written), and the
check that an event's body names the job its subject names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.contracts import JobCancelRequestedV1
from shared.messaging import Unrecordable, check_subject, job_named, shown

JOB = f"job_{uuid.uuid4().hex}"


def test_a_valid_subject_names_its_job() -> None:
    named = job_named(f"clipline.job.generated.v1.acme.{JOB}")
    assert not isinstance(named, Unrecordable)
    assert (named.tenant, named.job_id) == ("acme", JOB)


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        (f"clipline.job.generated.v1.Acme.{JOB}", "invalid_tenant"),
        (f"clipline.job.generated.v1.t$x.{JOB}", "invalid_tenant"),
        (f"clipline.job.generated.v1.t\u00fc.{JOB}", "invalid_tenant"),
        (f"clipline.job.generated.v1._unknown.{JOB}", "invalid_tenant"),
        (f"clipline.job.generated.v1.acme\n.{JOB}", "invalid_tenant"),
        (f"clipline.job.generated.v1.{'a' * 64}.{JOB}", "invalid_tenant"),
        ("clipline.job.generated.v1.acme.job_1", "invalid_job_id"),
        (f"clipline.job.generated.v1.acme.{JOB}\n", "invalid_job_id"),
        (f"clipline.job.generated.v1.acme.{JOB.upper()}", "invalid_job_id"),
        ("clipline.job.generated.v1.acme", "invalid_subject"),
        (f"clipline.job.generated.v2.acme.{JOB}", "invalid_subject"),
        (f"other.job.generated.v1.acme.{JOB}", "invalid_subject"),
    ],
)
def test_a_subject_naming_no_valid_job_says_why(subject: str, reason: str) -> None:
    named = job_named(subject)
    assert isinstance(named, Unrecordable)
    assert named.reason == reason


def event(tenant: str = "acme", job_id: str = JOB) -> JobCancelRequestedV1:
    return JobCancelRequestedV1(
        event_id="evt_1", occurred_at=datetime.now(UTC), job_id=job_id, tenant=tenant
    )


def test_a_body_naming_its_subjects_job_passes() -> None:
    check_subject(event(), event().subject)


@pytest.mark.parametrize("body", [event(tenant="other"), event(job_id=f"job_{uuid.uuid4().hex}")])
def test_a_body_naming_another_job_is_unrecordable(body: JobCancelRequestedV1) -> None:
    with pytest.raises(Unrecordable) as caught:
        check_subject(body, event().subject)
    assert caught.value.reason == "subject_mismatch"


def test_log_text_from_a_message_is_quoted_and_cut() -> None:
    assert shown("a\nb") == "'a\\nb'"
    assert shown("x" * 500, 10) == "'" + "x" * 10 + "'..."

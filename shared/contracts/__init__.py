"""Versioned event contracts and the job record: the only types that cross service boundaries."""

from shared.contracts.events import (
    EVENT_TYPES,
    TERMINAL_KINDS,
    AssetRef,
    BudgetAlertV1,
    Event,
    InputReference,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobFailedV1,
    JobGeneratedV1,
    JobProgressV1,
    JobRejectedV1,
    JobSpec,
    JobSubmittedV1,
    JobTimedOutV1,
    JobTimings,
)
from shared.contracts.jobs import JobRecordV1, record_key
from shared.contracts.lifecycle import TERMINAL, IllegalTransition, JobStatus
from shared.contracts.requests import REQUEST_SUBJECT_PREFIX, JobRequestV1, request_subject

__all__ = [
    "EVENT_TYPES",
    "REQUEST_SUBJECT_PREFIX",
    "TERMINAL",
    "TERMINAL_KINDS",
    "AssetRef",
    "BudgetAlertV1",
    "Event",
    "IllegalTransition",
    "InputReference",
    "JobAcceptedV1",
    "JobAdmittedV1",
    "JobCompletedV1",
    "JobFailedV1",
    "JobGeneratedV1",
    "JobProgressV1",
    "JobRecordV1",
    "JobRejectedV1",
    "JobRequestV1",
    "JobSpec",
    "JobStatus",
    "JobSubmittedV1",
    "JobTimedOutV1",
    "JobTimings",
    "record_key",
    "request_subject",
]

"""The job record kept in the jobs KV bucket, and its one-way lifecycle."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.contracts.events import AssetRef, JobSpec


class JobStatus(StrEnum):
    ACCEPTED = "accepted"
    ADMITTED = "admitted"
    SUBMITTED = "submitted"
    GENERATING = "generating"
    GENERATED = "generated"
    COMPLETED = "completed"
    REJECTED = "rejected"
    FAILED = "failed"


_RANK: dict[JobStatus, int] = {
    JobStatus.ACCEPTED: 1,
    JobStatus.ADMITTED: 2,
    JobStatus.SUBMITTED: 3,
    JobStatus.GENERATING: 4,
    JobStatus.GENERATED: 5,
    JobStatus.COMPLETED: 9,
    JobStatus.REJECTED: 9,
    JobStatus.FAILED: 9,
}
TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.REJECTED, JobStatus.FAILED})


class JobRecordV1(BaseModel):
    """Current state of one job. Written only through `transition`, with KV compare-and-set."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1] = 1
    job_id: str
    tenant: str
    status: JobStatus
    spec: JobSpec
    idempotency_key: str
    request_hash: str
    trace_id: str | None = None
    cost_micros: int | None = None
    charged_micros: int | None = None
    upstream_id: str | None = None
    progress: int = 0
    assets: list[AssetRef] = []
    reason: str | None = None
    detail: str | None = None
    history: dict[str, datetime] = {}
    errors: dict[str, int] = {}
    """Handling errors so far, per stage: the retry budget survives redeliveries and crashes."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def transition(
    record: JobRecordV1, status: JobStatus, at: datetime, **changes: Any
) -> JobRecordV1 | None:
    """The record moved to `status`, or None when that would move the job backwards.

    Same-status updates are allowed only for GENERATING with higher progress, so redelivered or
    reordered events never undo later state; a terminal job never changes status again.
    """
    if record.terminal:
        return None
    if _RANK[status] < _RANK[record.status]:
        return None
    if status == record.status and (
        status != JobStatus.GENERATING or changes.get("progress", 0) <= record.progress
    ):
        return None
    history = dict(record.history)
    history.setdefault(status.value, at)
    return record.model_copy(update={"status": status, "history": history, **changes})


def settle(record: JobRecordV1, charged_micros: int) -> JobRecordV1 | None:
    """Record the final charge of a terminal job once; None if not terminal or already settled."""
    if not record.terminal or record.charged_micros is not None:
        return None
    return record.model_copy(update={"charged_micros": charged_micros})


def count_error(record: JobRecordV1, stage: str) -> JobRecordV1:
    """The record with one more handling error counted for `stage`."""
    errors = dict(record.errors)
    errors[stage] = errors.get(stage, 0) + 1
    return record.model_copy(update={"errors": errors})

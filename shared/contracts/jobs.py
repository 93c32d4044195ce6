"""The job record kept in the jobs KV bucket (`<tenant>.<job_id>`); it moves by lifecycle steps."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.contracts.events import AssetRef, JobSpec
from shared.contracts.lifecycle import CREATE_MAY_EXIST, TERMINAL, CreateOutcome, JobStatus


def record_key(tenant: str, job_id: str) -> str:
    """KV key of a job: one subject-like prefix per tenant, so a tenant's jobs list cheaply."""
    return f"{tenant}.{job_id}"


class JobRecordV1(BaseModel):
    """Current state of one job. Changed only by the steps of shared.contracts.lifecycle."""

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
    upstream_created_at: datetime | None = None
    """When the upstream says it created the job (its `created_at`): where its generation time
    starts, which can be well before `submitted` for a job adopted after a lost answer."""
    submit_attempts: int = 0
    last_attempt_at: datetime | None = None
    attempt_alive_at: datetime | None = None
    """When the upstream create in flight was last known alive (renewed while it runs): a
    fresh one is another worker's live attempt, not a lost one to reconcile."""
    create_outcome: CreateOutcome | None = None
    """What the latest create attempt says about the upstream (None: no attempt yet, or a
    record written before this field existed)."""
    progress: int = 0
    produced_seconds: int | None = None
    """Seconds of video the upstream reports it produced (what a completed job is billed for)."""
    expires_at: datetime | None = None
    """When the upstream's copy of the assets expires (its `expires_at`, UTC), when it says:
    recorded when the job is marked generated; storage's deadline."""
    assets: list[AssetRef] = []
    reason: str | None = None
    detail: str | None = None
    stage: str | None = None
    """The service that ended the job (with `reason` and `detail`), for every terminal outcome."""
    history: dict[str, datetime] = {}
    errors: dict[str, int] = {}
    """Handling errors so far, per stage: the retry budget survives redeliveries and crashes."""
    callback_url: str | None = None
    """The caller's webhook URL for this job's end (its request's `callback_url`, checked by
    intake): what intake's webhook sender reads, never an event's copy."""
    deleted_at: datetime | None = None
    """When the caller deleted the job's stored assets (storage, asked through intake): the
    OpenAI-compatible facade no longer shows the job; the native API shows it with this."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def create_may_exist(self) -> bool | None:
        """Whether an upstream create may exist (and may bill): None when the record does not
        say (no `create_outcome`); then its history is the evidence."""
        if self.create_outcome is None:
            return None
        return self.create_outcome in CREATE_MAY_EXIST

    @property
    def key(self) -> str:
        return record_key(self.tenant, self.job_id)

"""Job events (schema version 1). Subjects: clipline.job.<kind>.v1.<tenant>.<job_id>."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.ids import derived_event_id, fact_event_id

SUBJECT_ROOT = "clipline.job"


class JobRef(Protocol):
    """Anything that names a job: an event or a job record."""

    @property
    def job_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...


class Contract(BaseModel):
    """Frozen, tolerant reader: unknown fields are ignored so producers can add fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class InputReference(Contract):
    """An input image (the video's first frame), kept in the clipline_inputs object store."""

    object_name: str
    content_type: Literal["image/jpeg", "image/png", "image/webp"]
    size_bytes: int
    sha256: str


JobKind = Literal["generate", "remix", "edit", "extend"]
JOB_KINDS: tuple[JobKind, ...] = ("generate", "remix", "edit", "extend")
DERIVED_KINDS: frozenset[str] = frozenset({"remix", "edit", "extend"})
"""Kinds made from a completed job of the same tenant (`source_job_id`)."""


class JobSpec(Contract):
    """What to generate. Validated by intake against the model registry.

    A remix, edit or extension is made from `source_job_id` (a completed job of the same
    tenant): model and size are the source's; a remix or edit is as long as the source's
    video, and an extension's `seconds` is the segment it adds (what it is priced by), its
    `total_seconds` the stitched length of the video it makes."""

    model: str
    size: str
    seconds: int
    prompt: str
    input_reference: InputReference | None = None
    priority: Literal["high", "normal", "low"] = Field(
        default="normal", description="who goes first under the upstream's rate limit"
    )
    kind: JobKind = Field(
        default="generate", description="generate (from a prompt), remix, edit or extend"
    )
    source_job_id: str | None = Field(
        default=None, description="the completed job a remix, edit or extension is made from"
    )
    total_seconds: int | None = Field(
        default=None,
        description="extend: the stitched length (the source's video plus `seconds`)",
    )
    extensions: int = Field(
        default=0, description="extensions in the video's chain (this one included)"
    )

    @property
    def video_seconds(self) -> int:
        """How long the video this job makes is (an extension's stitched total)."""
        return self.seconds if self.total_seconds is None else self.total_seconds


class AssetRef(Contract):
    """One stored asset variant."""

    variant: Literal["video", "thumbnail", "spritesheet"]
    bucket: str
    key: str
    size_bytes: int
    sha256: str
    content_type: str
    url: str | None = Field(
        default=None,
        description="a presigned GET URL of the object (completion events only; it expires "
        "after CLIPLINE_S3_PRESIGN_SECONDS and is a credential: never logged or recorded)",
    )


class JobTimings(Contract):
    """Wall-clock milestones of a job (UTC) and the derived durations in seconds."""

    accepted_at: datetime
    submitted_at: datetime | None = None
    generated_at: datetime | None = None
    completed_at: datetime
    queue_seconds: float | None = None
    generation_seconds: float | None = None
    storage_seconds: float | None = None
    total_seconds: float


class Event(Contract):
    """Base of every job event. `event_id` is also the Nats-Msg-Id of its publish.

    An event is a notification that names a job. The job record is the one source of its facts
    (spec, cost, upstream id, expiry): whatever copies of them an event carries are for
    subscribers outside the pipeline, and no stage acts on them (an event whose copies
    disagree with the record changes nothing; shared.contracts.stage)."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    schema_version: Literal[1] = 1
    event_id: str
    occurred_at: datetime
    job_id: str
    tenant: str

    @property
    def subject(self) -> str:
        return f"{SUBJECT_ROOT}.{self.kind}.v{self.version}.{self.tenant}.{self.job_id}"

    @classmethod
    def subject_filter(cls, tenant: str = "*", job_id: str = "*") -> str:
        """Subject filter for this event type, optionally for one tenant or one job."""
        return f"{SUBJECT_ROOT}.{cls.kind}.v{cls.version}.{tenant}.{job_id}"

    @staticmethod
    def subject_filter_any(tenant: str = "*", job_id: str = "*") -> str:
        """Every event kind (v1) of one tenant or job: what a client follows."""
        return f"{SUBJECT_ROOT}.*.v1.{tenant}.{job_id}"

    @classmethod
    def durable(cls, service: str) -> str:
        """Durable consumer name, `<svc>--<subject-with-dashes>`."""
        return f"{service}--job-{cls.kind}-v{cls.version}"

    @classmethod
    def fact(cls, job: JobRef, *, key: str = "", **fields: Any) -> Self:
        """The event stating a fact about `job`. Its id derives from (job, kind[, key]) alone,
        so however many paths reach the same fact (a redelivery, a webhook and a poll, a
        reconcile and a create), JetStream keeps one."""
        return cls(
            event_id=fact_event_id(job.job_id, cls.kind, key),
            occurred_at=datetime.now(UTC),
            job_id=job.job_id,
            tenant=job.tenant,
            **fields,
        )

    @classmethod
    def caused_by(cls, cause_id: str, job: JobRef, *, key: str = "", **fields: Any) -> Self:
        """An event that is not a fact of the job (e.g. a refusal of one request message):
        its id derives from the message that caused it, so a redelivery is dropped."""
        return cls(
            event_id=derived_event_id(cause_id, cls.kind, key),
            occurred_at=datetime.now(UTC),
            job_id=job.job_id,
            tenant=job.tenant,
            **fields,
        )


class JobAcceptedV1(Event):
    """intake: the request is valid and recorded."""

    kind = "accepted"
    spec: JobSpec
    idempotency_key: str


class JobRejectedV1(Event):
    """Terminal: the job was refused before any upstream spend (bad request, unpriced, budget)."""

    kind = "rejected"
    reason: str = Field(description="machine-readable, e.g. invalid_request, unpriced")
    detail: str
    stage: str
    request_id: str | None = Field(
        default=None,
        description="the refused request message's Nats-Msg-Id (seq:<n> without one): how a "
        "NATS client finds the answer to its request",
    )
    idempotency_key: str | None = Field(
        default=None, description="the request's idempotency key, when it named a usable one"
    )


class JobAdmittedV1(Event):
    """pricing_guard: priced and within budget; may be sent upstream (as the record says)."""

    kind = "admitted"
    spec: JobSpec
    cost_micros: int


class JobSubmittedV1(Event):
    """submitter: the upstream job exists (its id is on the record)."""

    kind = "submitted"
    spec: JobSpec
    cost_micros: int
    upstream_id: str


class JobProgressV1(Event):
    """poller: upstream progress changed."""

    kind = "progress"
    upstream_id: str
    upstream_status: str
    progress: int


class JobGeneratedV1(Event):
    """poller: upstream finished generating; assets can be downloaded (the record holds the
    upstream id, cost and expiry storage uses)."""

    kind = "generated"
    upstream_id: str
    cost_micros: int
    produced_seconds: int | None = Field(
        default=None, description="seconds of video the upstream reports it produced"
    )
    expires_at: datetime | None = Field(
        default=None,
        description="when the upstream's copy of the assets expires (its `expires_at`, UTC), "
        "when it says; a copy of the record's `expires_at`",
    )


class JobFailedV1(Event):
    """Terminal: the job failed after admission (upstream failure, retries exhausted)."""

    kind = "failed"
    reason: str
    detail: str
    stage: str
    upstream_id: str | None = None


class JobTimedOutV1(Event):
    """Terminal: a deadline passed (upstream capacity never came, or generation never ended)."""

    kind = "timed_out"
    reason: str
    detail: str
    stage: str
    upstream_id: str | None = None


class JobCancelRequestedV1(Event):
    """intake: a client asked to cancel the job, which is now recorded `cancelling`; the
    submitter ends it at once (or when a create in flight answers)."""

    kind = "cancel_requested"


class JobCancelledV1(Event):
    """Terminal: the job was cancelled on request. Before submission nothing was spent; after
    it the upstream job runs on (the API cannot stop it) and its estimate is the sunk cost."""

    kind = "cancelled"
    reason: str = Field(default="cancelled", description="always cancelled")
    detail: str
    stage: str = Field(description="the service that ended it")
    upstream_id: str | None = Field(
        default=None, description="the upstream job that ran on, when one was created"
    )


class JobCompletedV1(Event):
    """Terminal: all assets are stored."""

    kind = "completed"
    upstream_id: str
    assets: list[AssetRef]
    cost_micros: int
    timings: JobTimings


class BudgetAlertV1(Event):
    """pricing_guard: admitting this job took a budget window past its soft threshold (once per
    crossing; the job itself was admitted)."""

    kind = "budget_alert"
    scope: str = Field(description="global or tenant:<tenant>")
    period: Literal["daily", "monthly", "lifetime"]
    window: str = Field(description="2026-12-02, 2026-12 or lifetime (UTC calendar)")
    soft_micros: int
    limit_micros: int
    used_micros: int = Field(description="reserved + charged + disputed after this admission")
    crossing: int = Field(description="how many times this window has crossed its threshold")


EVENT_TYPES: tuple[type[Event], ...] = (
    JobAcceptedV1,
    JobRejectedV1,
    JobAdmittedV1,
    JobSubmittedV1,
    JobProgressV1,
    JobGeneratedV1,
    JobFailedV1,
    JobTimedOutV1,
    JobCompletedV1,
    JobCancelRequestedV1,
    JobCancelledV1,
    BudgetAlertV1,
)
TERMINAL_KINDS = frozenset({"completed", "failed", "rejected", "timed_out", "cancelled"})


def parse_event_subject(subject: str) -> tuple[str, str, str] | None:
    """clipline.job.<kind>.v1.<tenant>.<job_id> -> (kind, tenant, job_id); None otherwise."""
    parts = subject.split(".")
    if len(parts) != 6 or ".".join(parts[:2]) != SUBJECT_ROOT or parts[3] != "v1":
        return None
    return parts[2], parts[4], parts[5]

"""Native `GET /v1/jobs/{id}/timeline`: a job's life from its stored events and its record, with
no tracing backend: each step, the service, when, how long, cost, reason (rules: timeline.py).
The events are read as GET /v1/jobs/{id}/events reads them (message by message, no consumer)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from services.intake import sse
from services.intake.follow import SHOWN_KINDS
from services.intake.http import DepsOf, Tenant, problem
from services.intake.openapi import answers, problems
from services.intake.ports import JobEvents, StoredEvent
from services.intake.timeline import Happened, Known, Timeline, build, trace_of
from services.intake.usecases import find
from shared.contracts.events import EVENT_TYPES, Event
from shared.contracts.jobs import JobRecordV1
from shared.emitters import WRITERS, emitter

log = logging.getLogger("clipline.intake.http")
router = APIRouter()
MAX_EVENTS = 1000
"""Events read at most for one timeline (a job has about ten; progress adds a few more)."""
READ_SECONDS = 10.0
MODELS: dict[str, type[Event]] = {e.kind: e for e in EVENT_TYPES}


class TimelineStep(BaseModel):
    """One step of a job's life: an event, or a state of the record no event stands for."""

    step: str = Field(description="the event kind, or the lifecycle state (source `record`)")
    source: Literal["event", "record"]
    service: str | None = Field(description="the service that took the step; null: unknown")
    at: datetime = Field(description="when (an event's `occurred_at`; the record's history)")
    since_previous_seconds: float
    since_start_seconds: float = Field(description="since the job was accepted")
    seq: int | None = Field(description="the event's stream sequence (its SSE id)")
    cost_micros: int | None = Field(description="the price the event states (micro-dollars)")
    cost_kind: Literal["reserved", "price"] | None = Field(
        description="reserved: what admission reserved in the budget; price: the job's price"
    )
    reason: str | None
    detail: str | None
    progress: int | None = Field(description="upstream progress (percent) of a progress event")
    trace_id: str | None = Field(description="the trace the event was emitted in")


class JobTimeline(BaseModel):
    """GET /v1/jobs/{id}/timeline."""

    job_id: str
    tenant: str
    status: str = Field(description="the record's status now")
    trace_id: str | None = Field(description="the job's trace (the record's)")
    cost_micros: int | None = Field(description="the job's price (the record's)")
    charged_micros: int | None = Field(description="the settled charge; null until settled")
    settled: bool
    total_seconds: float | None = Field(description="from accepted to the last step")
    events_read: int
    submit_attempts: int = Field(description="upstream create attempts (over 1: retried)")
    errors: dict[str, int] = Field(description="handling errors so far, per service")
    notes: list[str] = Field(description="where the steps came from, when not all from events")
    steps: list[TimelineStep]


def _utc(at: datetime) -> datetime:
    """In UTC (a time without an offset is taken as UTC, as every clipline time is)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def happened(stored: StoredEvent, tenant: str, job_id: str) -> Happened | None:
    """A stored event as a step (None: not shown to a tenant, or not about this job)."""
    kind = sse.kind_of(stored.subject)
    model = MODELS.get(kind)
    if model is None or kind not in SHOWN_KINDS:
        return None
    try:
        event = model.model_validate_json(stored.data)
    except ValidationError:
        if stored.stored_at is None:
            return None
        unreadable = "the event could not be read; its time is the stream's"
        return Happened(stored.seq, kind, _utc(stored.stored_at), detail=unreadable)
    if (event.tenant, event.job_id) != (tenant, job_id):
        return None  # its body names another job than its subject
    return Happened(
        stored.seq, kind, _utc(event.occurred_at),
        cost_micros=getattr(event, "cost_micros", None), reason=getattr(event, "reason", None),
        detail=getattr(event, "detail", None), stage=getattr(event, "stage", None),
        progress=getattr(event, "progress", None),
        trace_id=trace_of((stored.headers or {}).get("traceparent")),
    )  # fmt: skip


def known(record: JobRecordV1) -> Known:
    outcome = record.create_outcome.value if record.create_outcome is not None else None
    return Known(
        record.status.value, {s: _utc(at) for s, at in record.history.items()},
        record.cost_micros, record.charged_micros, record.reason, record.detail, record.stage,
        record.trace_id, record.submit_attempts, outcome, dict(record.errors),
    )  # fmt: skip


async def stored_events(
    events: JobEvents, tenant: str, job_id: str, limit: int = MAX_EVENTS
) -> tuple[list[StoredEvent], bool]:
    """The job's events stored so far (following none that come later), and whether there were
    more than `limit`."""
    found: list[StoredEvent] = []
    reading = events.follow(tenant, job_id, 0, 0.0)  # idle at once: caught up
    try:
        async for stored in reading:
            if stored is None:
                return found, False
            found.append(stored)
            if len(found) >= limit:
                return found, True
    finally:
        close = getattr(reading, "aclose", None)
        if close is not None:
            await close()  # its subscription ends now, not when collected
    return found, False


def view(record: JobRecordV1, timeline: Timeline) -> JobTimeline:
    return JobTimeline(
        job_id=record.job_id, tenant=record.tenant, status=timeline.status,
        trace_id=timeline.trace_id, cost_micros=timeline.cost_micros,
        charged_micros=timeline.charged_micros, settled=timeline.charged_micros is not None,
        total_seconds=timeline.total_seconds, events_read=timeline.events_read,
        submit_attempts=timeline.submit_attempts, errors=dict(timeline.errors),
        notes=list(timeline.notes),
        steps=[TimelineStep.model_validate(step, from_attributes=True) for step in timeline.steps],
    )  # fmt: skip


@router.get(
    "/v1/jobs/{job_id}/timeline",
    responses={**answers(JobTimeline, description="the job's steps"), **problems(404, 503)},
)
async def job_timeline(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """The job's life, step by step: which service took each step, when, how long after the
    previous one and after the start, what it cost and why it ended. A job whose events are
    no longer kept answers what its record holds (`notes` says so); another tenant's job is
    not found (404)."""
    try:
        record = await find(deps, tenant, job_id)
    except Exception:  # NATS or KV unreachable
        log.warning("intake: could not read job %s", job_id, exc_info=True)
        raise problem(503, "unavailable", "job records cannot be read now; retry shortly") from None
    if record is None:
        raise problem(404, "not_found", f"no job {job_id!r} for this API key's tenant")
    stored: list[StoredEvent] = []
    truncated = False
    if deps.events is not None:
        try:
            async with asyncio.timeout(READ_SECONDS):
                stored, truncated = await stored_events(deps.events, tenant, job_id)
        except Exception:  # NATS unreachable, or too slow to answer
            log.warning("intake: could not read the events of %s", job_id, exc_info=True)
            raise problem(503, "unavailable", "the job's events cannot be read now") from None
    steps = [s for s in (happened(e, tenant, job_id) for e in stored) if s is not None]
    timeline = build(
        steps, known(record), emitter=emitter, writers=WRITERS, truncated=truncated,
        events_readable=deps.events is not None,
    )  # fmt: skip
    return JSONResponse(view(record, timeline).model_dump(mode="json"))

"""Job moves observed where they are written: the transition counter, the time in the state
left, the transition as an event of the current span, the job's attributes on its spans.

The job stores call `record_move` once per compare-and-set that wrote a new status (never for
a write that lost its race, nor for a redelivery that finds the job already moved: those write
nothing), so each real move of a job is counted once, by the service that made it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache

from opentelemetry import trace

from shared import metrics
from shared.contracts.jobs import JobRecordV1
from shared.contracts.lifecycle import TERMINAL

DEFAULT_PROVIDER = "simulator"
"""shared.config.CommonSettings' default provider (CLIPLINE_PROVIDER unset)."""


@cache
def provider() -> str:
    """The provider this deployment sends its jobs to (CLIPLINE_PROVIDER, as every service
    reads it): one per deployment, so it labels every job of the process."""
    return os.environ.get("CLIPLINE_PROVIDER") or DEFAULT_PROVIDER


def moved(old: JobRecordV1 | None, new: JobRecordV1) -> bool:
    """Does writing `new` over `old` move the job (a new job, or another status)? Bookkeeping
    (errors counted, a repeated step in the same state, a settlement) is no move."""
    return old is None or old.status != new.status


def transition_labels(old: JobRecordV1 | None, new: JobRecordV1, via: str) -> dict[str, str]:
    """The labels of clipline.job.transitions for a move: from_state '' for a new job; reason
    only for an end (the record's reason), '' otherwise."""
    return {
        "from_state": old.status.value if old is not None else "",
        "to_state": new.status.value,
        "tenant": new.tenant,
        "provider": via,
        "model": new.spec.model,
        "kind": new.spec.kind,
        "reason": (new.reason or "") if new.status in TERMINAL else "",
    }


def seconds_in_state(old: JobRecordV1, at: datetime) -> float | None:
    """How long the job was in `old.status` when it left it at `at`, from the record's history
    (the first entry into the state: a state entered again, such as `admitted` after a 429,
    counts from its first entry); None when the history does not say."""
    entered = old.history.get(old.status.value)
    if entered is None:
        return None
    return max(0.0, (at - entered).total_seconds())


def record_move(old: JobRecordV1 | None, new: JobRecordV1, at: datetime | None = None) -> None:
    """A write of `new` over `old` just won its compare-and-set: tag the current span with the
    job, and, when the write moved the job, count the transition and the time spent in the
    state left, and add a `clipline.transition` event to the span."""
    span = trace.get_current_span()
    recording = span.is_recording()
    if recording:
        tag(span, new)
    if not moved(old, new):
        return
    when = at or datetime.now(UTC)
    via = provider()
    labels = transition_labels(old, new, via)
    metrics.JOB_TRANSITIONS.add(1, labels)
    if old is not None and (spent := seconds_in_state(old, when)) is not None:
        metrics.STAGE_DURATION.record(
            spent,
            {"stage": old.status.value, "provider": via, "model": new.spec.model,
             "kind": new.spec.kind},
        )  # fmt: skip
    if recording:
        span.add_event(
            "clipline.transition",
            {"clipline.from_state": labels["from_state"], "clipline.to_state": labels["to_state"],
             "clipline.reason": labels["reason"]},
        )  # fmt: skip


def tag(span: trace.Span, record: JobRecordV1) -> None:
    """The job's attributes on a span of its trace."""
    span.set_attributes(
        {
            "clipline.job.id": record.job_id,
            "clipline.tenant": record.tenant,
            "clipline.model": record.spec.model,
            "clipline.kind": record.spec.kind,
        }
    )


def tag_current(record: JobRecordV1 | None) -> None:
    """The job's attributes on the current span, when one is recorded (a job store's read or
    write: every handler that touches a job tags its span so)."""
    if record is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        tag(span, record)

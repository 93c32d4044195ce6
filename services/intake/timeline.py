"""A job's timeline from its events and its record. Pure: no I/O, no clock, no logging.

Each step is one stored event (in stream order), or a state of the record's history that no
event stands for (a state entered without an event, `submitting` and `storing`, or one whose
event the stream no longer keeps), merged in by time. The service of a step is derived from
what it is (the services allowed to emit that event kind; the record's `stage` for its end),
never taken from the event's own word alone."""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

EVENT_OF_STATE: Mapping[str, str] = {
    "accepted": "accepted",
    "admitted": "admitted",
    "submitted": "submitted",
    "generating": "progress",
    "generated": "generated",
    "completed": "completed",
    "cancelling": "cancel_requested",
    "rejected": "rejected",
    "failed": "failed",
    "cancelled": "cancelled",
    "timed_out": "timed_out",
}
"""The event that announces a job's entering each state (none: `submitting`, `storing`)."""
ENDS = frozenset({"completed", "rejected", "failed", "cancelled", "timed_out"})
COST_KINDS: Mapping[str, str] = {"admitted": "reserved"}
"""What an event's `cost_micros` is: the price pricing_guard reserved in the budget at
admission; every later event repeats the job's price."""
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")

Emitter = Callable[[str, str | None], str | None]
"""(event kind, the service claimed for it) -> the service that emitted it, None: unknown."""


@dataclass(frozen=True, slots=True)
class Happened:
    """One stored event, as the timeline reads it."""

    seq: int
    kind: str
    at: datetime
    cost_micros: int | None = None
    reason: str | None = None
    detail: str | None = None
    stage: str | None = None
    """The service the event says ended the job (a claim: checked against who may emit it)."""
    progress: int | None = None
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class Known:
    """What the job record holds."""

    status: str
    history: Mapping[str, datetime]
    cost_micros: int | None = None
    charged_micros: int | None = None
    reason: str | None = None
    detail: str | None = None
    stage: str | None = None
    trace_id: str | None = None
    submit_attempts: int = 0
    create_outcome: str | None = None
    errors: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    step: str
    """The event kind, or the lifecycle state (source `record`)."""
    source: Literal["event", "record"]
    service: str | None
    at: datetime
    since_previous_seconds: float
    since_start_seconds: float
    seq: int | None = None
    cost_micros: int | None = None
    cost_kind: str | None = None
    reason: str | None = None
    detail: str | None = None
    progress: int | None = None
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    steps: tuple[Step, ...]
    status: str
    trace_id: str | None
    cost_micros: int | None
    charged_micros: int | None
    events_read: int
    submit_attempts: int
    errors: Mapping[str, int]
    notes: tuple[str, ...]

    @property
    def total_seconds(self) -> float | None:
        return self.steps[-1].since_start_seconds if self.steps else None


def trace_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C `traceparent` header (None: absent, malformed or all zeros)."""
    if traceparent is None:
        return None
    found = _TRACEPARENT.fullmatch(traceparent.strip())
    if found is None or set(found[1]) == {"0"}:
        return None
    return found[1]


@dataclass(frozen=True, slots=True)
class _Draft:
    step: str
    source: Literal["event", "record"]
    service: str | None
    at: datetime
    seq: int | None = None
    cost_micros: int | None = None
    reason: str | None = None
    detail: str | None = None
    progress: int | None = None
    trace_id: str | None = None


def _from_event(event: Happened, known: Known, emitter: Emitter) -> _Draft:
    # The record's stage names who ended the job; an event of another end keeps its own claim.
    own_end = event.kind in ENDS and event.kind == known.status
    claimed = known.stage if own_end else event.stage
    return _Draft(
        event.kind, "event", emitter(event.kind, claimed), event.at, event.seq,
        event.cost_micros, event.reason, event.detail, event.progress, event.trace_id,
    )  # fmt: skip


def _from_record(state: str, at: datetime, known: Known, writers: Mapping[str, str]) -> _Draft:
    if state in ENDS and state != "completed":
        return _Draft(state, "record", known.stage, at, reason=known.reason, detail=known.detail)
    reason = detail = None
    if state == "submitting" and known.submit_attempts > 1:
        reason = "retried"
        detail = f"{known.submit_attempts} upstream create attempts (last: {known.create_outcome})"
    return _Draft(state, "record", writers.get(state), at, reason=reason, detail=detail)


def _seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 3)


def build(
    events: Iterable[Happened],
    known: Known,
    *,
    emitter: Emitter,
    writers: Mapping[str, str],
    truncated: bool = False,
    events_readable: bool = True,
) -> Timeline:
    """The timeline of a job from its stored events (in stream order) and its record.
    `truncated`: more events were stored than read; `events_readable`: False when none could
    be read at all (this intake reads no stream)."""
    happened = list(events)
    seen = {e.kind for e in happened}
    from_events = [_from_event(e, known, emitter) for e in happened]
    from_record = sorted(
        (
            _from_record(state, at, known, writers)
            for state, at in known.history.items()
            if EVENT_OF_STATE.get(state) not in seen
        ),
        key=lambda d: d.at,
    )
    drafts = list(heapq.merge(from_events, from_record, key=lambda d: d.at))
    start = known.history.get("accepted") or (drafts[0].at if drafts else None)
    steps: list[Step] = []
    for draft in drafts:
        previous = steps[-1].at if steps else (start or draft.at)
        step = Step(
            draft.step, draft.source, draft.service, draft.at,
            since_previous_seconds=_seconds(draft.at, previous),
            since_start_seconds=_seconds(draft.at, start or draft.at),
            seq=draft.seq, cost_micros=draft.cost_micros,
            cost_kind=None if draft.cost_micros is None else COST_KINDS.get(draft.step, "price"),
            reason=draft.reason, detail=draft.detail, progress=draft.progress,
            trace_id=draft.trace_id,
        )  # fmt: skip
        steps.append(step)
    return Timeline(
        tuple(steps), known.status, known.trace_id, known.cost_micros, known.charged_micros,
        len(happened), known.submit_attempts, dict(known.errors),
        notes(happened, known, from_record, truncated=truncated, readable=events_readable),
    )  # fmt: skip


def notes(
    happened: list[Happened],
    known: Known,
    from_record: list[_Draft],
    *,
    truncated: bool,
    readable: bool,
) -> tuple[str, ...]:
    """What a reader should know about where the steps came from."""
    found: list[str] = []
    missing = [d.step for d in from_record if d.step in EVENT_OF_STATE]
    if not readable:
        found.append("this intake reads no job events: every step is the record's")
    elif not happened:
        found.append(
            "no event of this job is on the stream any more (it keeps them 7 days) or yet: "
            "every step is the record's"
        )
    elif missing:
        found.append(
            f"no event found for {', '.join(missing)} (older than the stream keeps, or not "
            "announced yet): the record's time is shown"
        )
    if truncated:
        found.append(f"only the first {len(happened)} events are shown")
    billable = known.status in ENDS - {"rejected"} and known.cost_micros is not None
    if billable and known.charged_micros is None:
        found.append("the charge is not settled yet (pricing_guard settles it after the end)")
    return tuple(found)

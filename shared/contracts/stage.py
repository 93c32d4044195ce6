"""What every stage decides first about an event, from the job record alone (pure).

An event is a notification that names a job; the record is the one source of its facts. So
before any stage acts, `screen` says whether the event may act at all: no record (`Unknown`),
facts that disagree with the record (`Disagrees`: forged or stale; nothing is changed), a job
that already ended (`Ended`: the stage announces its own end again, should it have been lost),
a job asked to cancel (`Cancelling`), or a live job the stage may decide about (`Live`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.contracts.lifecycle import TERMINAL, IllegalTransition, JobStatus

if TYPE_CHECKING:
    from shared.contracts.events import Event
    from shared.contracts.jobs import JobRecordV1

FACTS = (
    "tenant",
    "job_id",
    "spec",
    "cost_micros",
    "upstream_id",
    "idempotency_key",
    "produced_seconds",
    "expires_at",
)
"""Fields an event may carry as a copy of the record's facts, for its subscribers. A consumer
never acts on them; it only checks that they agree with the record."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """No record of the job: nothing to act on (and nothing may be reserved or created)."""


@dataclass(frozen=True, slots=True)
class Disagrees:
    """The event's copy of a fact is not the record's: the event is forged or stale."""

    fields: tuple[str, ...]

    @property
    def detail(self) -> str:
        return "not as on the record: " + ", ".join(self.fields)


@dataclass(frozen=True, slots=True)
class Ended:
    """The job ended: the stage that ended it announces the end again (its fact id drops a
    duplicate), nothing else is done."""

    record: JobRecordV1


@dataclass(frozen=True, slots=True)
class Cancelling:
    """A client asked to cancel the job: the stage ends it (or leaves it to the stage whose
    work may still be running)."""

    record: JobRecordV1


@dataclass(frozen=True, slots=True)
class Live:
    """A live job whose record agrees with the event: the stage decides from `record`."""

    record: JobRecordV1


Screened = Unknown | Disagrees | Ended | Cancelling | Live


def disagreement(record: JobRecordV1, event: Event) -> tuple[str, ...]:
    """The facts `event` carries that are not the record's. A fact the event leaves out (None)
    is no claim; a fact the event states while the record has none is a disagreement."""
    found = []
    for name in FACTS:
        if name not in type(event).model_fields:
            continue
        claimed: Any = getattr(event, name)
        if claimed is None:
            continue
        if getattr(record, name, None) != claimed:
            found.append(name)
    return tuple(found)


def screen(record: JobRecordV1 | None, event: Event) -> Screened:
    """The first decision of every stage about `event`: may it act, and on which record?"""
    if record is None:
        return Unknown()
    if fields := disagreement(record, event):
        return Disagrees(fields)
    if record.status in TERMINAL:
        return Ended(record)
    if record.status == JobStatus.CANCELLING:
        return Cancelling(record)
    return Live(record)


def screen_then(
    record: JobRecordV1 | None,
    event: Event,
    step: Callable[[JobRecordV1], JobRecordV1],
) -> tuple[JobRecordV1 | None, Screened]:
    """`screen`, then the stage's first lifecycle `step` on a live record, decided together
    (for `jobstore.apply`: one read, one write): the stepped record to write and `Live` of it,
    or nothing to write and the verdict as found (a refused step: `Live` of the record as it
    is, which the stage tells by its status)."""
    verdict = screen(record, event)
    if not isinstance(verdict, Live):
        return None, verdict
    try:
        moved = step(verdict.record)
    except IllegalTransition:
        return None, verdict
    return moved, Live(moved)

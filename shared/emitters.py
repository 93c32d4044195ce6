"""Which service emitted a job event, and which one moved a job into a state: derived from the
NATS identities (a kind's possible emitters are the services allowed to publish it), never from
what an event says about itself."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from shared.contracts.lifecycle import JobStatus
from shared.identities import SERVICES


def _emitters() -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for service in SERVICES.values():
        for event in service.emits:
            found.setdefault(event.kind, []).append(service.name)
    return {kind: tuple(names) for kind, names in found.items()}


EMITTERS: Mapping[str, tuple[str, ...]] = MappingProxyType(_emitters())
"""Event kind -> the services whose NATS user may publish it (in SERVICES order). One name:
that service emitted it; several (`failed`, `rejected`, `cancelled`, `timed_out`): one of them,
which the job record's `stage` names for the job's end."""

WRITERS: Mapping[str, str] = MappingProxyType(
    {
        JobStatus.ACCEPTED: "intake",
        JobStatus.ADMITTED: "pricing_guard",
        JobStatus.SUBMITTING: "submitter",
        JobStatus.SUBMITTED: "submitter",
        JobStatus.GENERATING: "poller",
        JobStatus.GENERATED: "poller",
        JobStatus.STORING: "storage",
        JobStatus.COMPLETED: "storage",
        JobStatus.CANCELLING: "intake",
    }
)
"""Live state (and `completed`) -> the service whose step moves a job into it; an end other
than `completed` is written by the service the record's `stage` names."""


def emitter(kind: str, claimed: str | None = None) -> str | None:
    """The service that emitted an event of `kind`: the only one allowed to, or `claimed` (the
    record's or event's `stage`) when it is one of those allowed; None when it cannot be told."""
    allowed = EMITTERS.get(kind, ())
    if len(allowed) == 1:
        return allowed[0]
    return claimed if claimed in allowed else None

"""GET /v1/jobs/{id}/events as Server-Sent Events: the job's stored events, then live ones, until
its terminal event; a heartbeat comment while idle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from services.intake import sse
from services.intake.ports import Deps, JobEvents
from services.intake.usecases import find
from shared.contracts.events import TERMINAL_KINDS
from shared.identities import TENANT_EVENTS

log = logging.getLogger("clipline.intake.http")
HEARTBEAT_SECONDS = 15.0
IDLE_ENDS = 2
"""Idle periods with the record ended (and no terminal event) after which the stream ends."""
SHOWN_KINDS = frozenset(e.kind for e in TENANT_EVENTS)
"""What a tenant sees of its job: its lifecycle, as over NATS (no budget alert: an alert of a
global window tells of every tenant's spend)."""


async def event_stream(
    deps: Deps, events: JobEvents, tenant: str, job_id: str, *, after: int, idle_seconds: float
) -> AsyncIterator[bytes]:
    """The SSE body. It ends after the job's terminal event; or after two idle periods in which
    the record said the job ended (its terminal event is older than the stream keeps); or when
    the stream cannot be read (a comment says so, and the client resumes with Last-Event-ID)."""
    ended_idle = 0  # idle periods in a row in which the record said the job ended
    try:
        async for stored in events.follow(tenant, job_id, after, idle_seconds):
            if stored is None:
                record = await find(deps, tenant, job_id)
                ended_idle = ended_idle + 1 if record is not None and record.terminal else 0
                # Twice: a stage records the end just before it announces it.
                if ended_idle >= IDLE_ENDS:
                    yield sse.ENDED
                    return
                yield sse.HEARTBEAT
                continue
            kind = sse.kind_of(stored.subject)
            if kind not in SHOWN_KINDS:
                continue
            yield sse.message(stored.seq, kind, stored.data)
            if kind in TERMINAL_KINDS:
                yield sse.ENDED
                return
    except Exception:  # NATS unreachable mid-stream: the client resumes where it was
        log.warning("intake: could not follow the events of %s", job_id, exc_info=True)
        yield sse.UNAVAILABLE

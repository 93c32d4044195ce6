"""Server-Sent Events framing for GET /v1/jobs/{id}/events. Pure: bytes in the SSE wire format,
the Last-Event-ID it resumes after, and which event kinds a client sees and which end it."""

from __future__ import annotations

import re

from services.intake.domain import Invalid

_SEQUENCE = re.compile(r"[0-9]{1,20}")  # a uint64 has at most 20 digits
HEARTBEAT = b": heartbeat\n\n"
"""A comment line: keeps proxies and clients from timing out an idle stream."""
ENDED = b": end of stream (the job ended)\n\n"
UNAVAILABLE = b": the events cannot be read now; reconnect with Last-Event-ID\n\n"


def message(seq: int, kind: str, data: str) -> bytes:
    """One SSE message: its id is the event's stream sequence, its type the event kind."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"id: {seq}\nevent: {kind}\n{lines}\n".encode()


def resume_after(last_event_id: str | None) -> int | Invalid:
    """The stream sequence to resume after (0: from the start)."""
    if last_event_id is None or not last_event_id.strip():
        return 0
    value = last_event_id.strip()
    if not _SEQUENCE.fullmatch(value):
        return Invalid(
            "invalid_request",
            f"Last-Event-ID must be an event id this stream sent (a sequence number), "
            f"not {value[:32]!r}",
            "Last-Event-ID",
        )
    return int(value)


def kind_of(subject: str) -> str:
    """`clipline.job.<kind>.v1.<tenant>.<job_id>` -> kind."""
    parts = subject.split(".")
    return parts[2] if len(parts) > 2 else ""

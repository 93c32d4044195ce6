"""Which of a tenant's jobs GET /v1/jobs answers: filters, newest-first order, cursor pages.
Pure: no I/O, no clock; the handler turns records into rows and rows back into records.

Order is (accepted time, job id), newest first. A cursor names the last row of a page, and the
next page holds the rows strictly after it in that order (keyset pagination): jobs accepted
while a client pages (newer, so before its cursor) never shift, repeat or hide older rows."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.intake.domain import Invalid
from shared.contracts.ids import JOB_ID_RE
from shared.contracts.lifecycle import JobStatus

GENERATE = "generate"
KINDS = (GENERATE, "remix", "edit", "extend")
"""Job kinds a filter may name (a record's `spec.kind`; records of before kinds are `generate`)."""
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
NEVER = datetime.min.replace(tzinfo=UTC)
"""The accepted time of a record that has none (written before history existed): oldest."""
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_CURSOR_VERSION = "c1"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a row sits in the listing's order (compared oldest-first; listed newest-first)."""

    accepted_at: datetime
    job_id: str


@dataclass(frozen=True, slots=True)
class Row:
    """What a filter and the order look at of one job."""

    job_id: str
    status: str
    kind: str
    model: str
    accepted_at: datetime

    @property
    def position(self) -> Position:
        return Position(self.accepted_at, self.job_id)


@dataclass(frozen=True, slots=True)
class JobQuery:
    """A parsed GET /v1/jobs: None for a filter not given (anything goes)."""

    statuses: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    models: frozenset[str] | None = None
    created_after: datetime | None = None
    """Inclusive: accepted at or after."""
    created_before: datetime | None = None
    """Exclusive: accepted strictly before (so ranges put end to end never overlap)."""
    limit: int = DEFAULT_LIMIT
    after: Position | None = None
    """The previous page's last row (from its cursor)."""


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    next: Position | None
    """The position the next page starts after; None when this page is the last."""


def values(given: Sequence[str] | None) -> list[str]:
    """A repeatable parameter that may also be a comma list: `a,b&x=c` -> [a, b, c]."""
    return [v.strip() for item in given or () for v in item.split(",") if v.strip()]


def parse_time(value: str, field: str) -> datetime | Invalid:
    """An RFC 3339 date-time with its offset (`Z` or `+hh:mm`), as UTC."""
    if not _RFC3339.match(value):
        return Invalid(
            "invalid_request",
            f"{field} must be an RFC 3339 date-time with an offset "
            f"(e.g. 2026-01-31T12:00:00Z), not {value[:64]!r}",
            field,
        )
    try:
        return datetime.fromisoformat(value.upper().replace(" ", "T")).astimezone(UTC)
    except ValueError:
        return Invalid("invalid_request", f"{field} {value[:64]!r} is not a real date-time", field)


def _choice(
    given: Sequence[str] | None, allowed: Iterable[str], field: str
) -> frozenset[str] | Invalid | None:
    picked = values(given)
    if not picked:
        return None
    known = list(allowed)
    unknown = [v for v in picked if v not in known]
    if unknown:
        return Invalid(
            "invalid_request",
            f"{field} {unknown[0][:64]!r} is not one of {', '.join(known)}",
            field,
        )
    return frozenset(picked)


def parse_query(
    *,
    status: Sequence[str] | None = None,
    kind: Sequence[str] | None = None,
    model: Sequence[str] | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> JobQuery | Invalid:
    """The query of GET /v1/jobs, or the first thing wrong with it (naming the parameter)."""
    statuses = _choice(status, [s.value for s in JobStatus], "status")
    if isinstance(statuses, Invalid):
        return statuses
    kinds = _choice(kind, KINDS, "kind")
    if isinstance(kinds, Invalid):
        return kinds
    models = values(model)
    times: dict[str, datetime | None] = {}
    for field, given in (("created_after", created_after), ("created_before", created_before)):
        at = parse_time(given, field) if given is not None else None
        if isinstance(at, Invalid):
            return at
        times[field] = at
    after, before = times["created_after"], times["created_before"]
    if after is not None and before is not None and before <= after:
        return Invalid("invalid_request", "created_before must be later than created_after",
                       "created_before")  # fmt: skip
    if not 1 <= limit <= MAX_LIMIT:
        return Invalid("invalid_request", f"limit must be 1..{MAX_LIMIT}, not {limit}", "limit")
    position = decode_cursor(cursor) if cursor is not None else None
    if isinstance(position, Invalid):
        return position
    return JobQuery(
        statuses=statuses, kinds=kinds, models=frozenset(models) if models else None,
        created_after=after, created_before=before, limit=limit, after=position,
    )  # fmt: skip


def matches(row: Row, query: JobQuery) -> bool:
    return (
        (query.statuses is None or row.status in query.statuses)
        and (query.kinds is None or row.kind in query.kinds)
        and (query.models is None or row.model in query.models)
        and (query.created_after is None or row.accepted_at >= query.created_after)
        and (query.created_before is None or row.accepted_at < query.created_before)
    )


def page(rows: Iterable[Row], query: JobQuery) -> Page:
    """The rows of one page: those matching the query, after its cursor, newest first."""
    kept = sorted(
        (
            r
            for r in rows
            if matches(r, query) and (query.after is None or r.position < query.after)
        ),
        key=lambda r: r.position,
        reverse=True,
    )
    shown = kept[: query.limit]
    more = len(kept) > query.limit
    return Page(shown, shown[-1].position if more else None)


def encode_cursor(position: Position) -> str:
    """Opaque to clients: the version, the accepted time and the job id, base64url."""
    raw = f"{_CURSOR_VERSION}|{position.accepted_at.isoformat()}|{position.job_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position | Invalid:
    wrong = Invalid(
        "invalid_request", "cursor is not one this API gave (use next_cursor)", "cursor"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return wrong
    version, _, rest = raw.partition("|")
    at, _, job_id = rest.partition("|")
    if version != _CURSOR_VERSION or not JOB_ID_RE.fullmatch(job_id):
        return wrong
    try:
        accepted_at = datetime.fromisoformat(at)
    except ValueError:
        return wrong
    if accepted_at.tzinfo is None:
        return wrong
    return Position(accepted_at.astimezone(UTC), job_id)

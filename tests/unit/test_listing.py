"""GET /v1/jobs decisions: the query's parsing, filters, newest-first order and cursor pages
(every job once, in order, whatever is inserted while a client pages)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.intake.domain import Invalid
from services.intake.listing import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    JobQuery,
    Position,
    Row,
    decode_cursor,
    encode_cursor,
    page,
    parse_query,
    values,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)
STATUSES = ("accepted", "generating", "completed", "failed")


def row(n: int, *, seconds: int | None = None, status: str = "accepted", model: str = "sora-2",
        kind: str = "generate") -> Row:  # fmt: skip
    at = T0 + timedelta(seconds=n if seconds is None else seconds)
    return Row(f"job_{n:032x}", status, kind, model, at)


rows_strategy = st.lists(
    st.builds(
        lambda n, s, status, model: row(n, seconds=s, status=status, model=model),
        st.integers(0, 10**6),
        st.integers(0, 50),  # few distinct times: ties broken by job id
        st.sampled_from(STATUSES),
        st.sampled_from(("sora-2", "sora-2-pro")),
    ),
    max_size=60,
    unique_by=lambda r: r.job_id,
)


def walk(rows: list[Row], query: JobQuery) -> list[list[Row]]:
    pages = []
    while True:
        found = page(rows, query)
        pages.append(found.rows)
        if found.next is None:
            return pages
        cursor = decode_cursor(encode_cursor(found.next))  # through the wire form
        assert isinstance(cursor, Position)
        query = _after(query, cursor)


def _after(query: JobQuery, cursor: Position) -> JobQuery:
    return JobQuery(
        query.statuses, query.kinds, query.models, query.created_after, query.created_before,
        query.limit, cursor,
    )  # fmt: skip


@given(rows_strategy, st.integers(1, 7), st.sets(st.sampled_from(STATUSES)))
@settings(max_examples=200, deadline=None)
def test_pages_hold_every_match_once_newest_first(
    rows: list[Row], limit: int, statuses: set[str]
) -> None:
    query = JobQuery(statuses=frozenset(statuses) or None, limit=limit)

    pages = walk(rows, query)
    listed = [r for p in pages for r in p]

    expected = sorted(
        (r for r in rows if not statuses or r.status in statuses),
        key=lambda r: (r.accepted_at, r.job_id),
        reverse=True,
    )
    assert listed == expected
    assert all(len(p) <= limit for p in pages)
    assert all(pages[:-1])  # only the last page may be empty (and only when nothing matched)


@given(rows_strategy, st.integers(1, 5), rows_strategy)
@settings(max_examples=200, deadline=None)
def test_inserts_while_paging_never_repeat_or_hide_a_job(
    before: list[Row], limit: int, inserted: list[Row]
) -> None:
    """Jobs accepted between two pages: every job there from the start is listed exactly once,
    and no job twice. A newer job (the usual insert) is before the cursor and not listed."""
    present = list(before)
    ids = {r.job_id for r in before}
    late = [r for r in inserted if r.job_id not in ids]
    query = JobQuery(limit=limit)
    listed: list[Row] = []
    while True:
        found = page(present, query)
        listed += found.rows
        if late:
            present.append(late.pop())  # someone submits between two pages
        if found.next is None:
            break
        query = _after(query, found.next)

    assert len({r.job_id for r in listed}) == len(listed)
    assert {r.job_id for r in before} <= {r.job_id for r in listed}
    positions = [r.position for r in listed]
    assert positions == sorted(positions, reverse=True)


def test_filters_combine() -> None:
    rows = [
        row(1, status="completed", model="sora-2"),
        row(2, status="failed", model="sora-2-pro"),
        row(3, status="completed", model="sora-2-pro"),
        row(4, status="accepted", model="sora-2-pro", kind="remix"),
    ]
    query = parse_query(status=["completed,failed"], model=["sora-2-pro"])
    assert isinstance(query, JobQuery)
    assert [r.job_id for r in page(rows, query).rows] == [rows[2].job_id, rows[1].job_id]

    remixes = parse_query(kind=["remix"])
    assert isinstance(remixes, JobQuery)
    assert [r.job_id for r in page(rows, remixes).rows] == [rows[3].job_id]


def test_created_range_is_after_inclusive_before_exclusive() -> None:
    rows = [row(n) for n in range(5)]
    query = parse_query(
        created_after=(T0 + timedelta(seconds=1)).isoformat(),
        created_before=(T0 + timedelta(seconds=3)).isoformat().replace("+00:00", "Z"),
    )
    assert isinstance(query, JobQuery)
    assert [r.job_id for r in page(rows, query).rows] == [rows[2].job_id, rows[1].job_id]


def test_offsets_are_read_as_utc() -> None:
    query = parse_query(created_after="2026-12-01T01:00:00+01:00")
    assert isinstance(query, JobQuery)
    assert query.created_after == T0


def test_defaults() -> None:
    assert parse_query() == JobQuery(limit=DEFAULT_LIMIT)
    assert values(["a, b", "", "c,,"]) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"status": ["completed,finished"]}, "status"),
        ({"kind": ["upscale"]}, "kind"),
        ({"created_after": "2026-12-01"}, "created_after"),
        ({"created_after": "2026-12-01T00:00:00"}, "created_after"),  # no offset
        ({"created_before": "yesterday"}, "created_before"),
        ({"created_before": "2026-02-30T00:00:00Z"}, "created_before"),
        (
            {"created_after": "2026-12-02T00:00:00Z", "created_before": "2026-12-01T00:00:00Z"},
            "created_before",
        ),
        ({"limit": 0}, "limit"),
        ({"limit": MAX_LIMIT + 1}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": encode_cursor(Position(T0, "job_" + "a" * 32))[:-3]}, "cursor"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(given: dict[str, object], field: str) -> None:
    refused = parse_query(**given)  # type: ignore[arg-type]

    assert isinstance(refused, Invalid)
    assert (refused.reason, refused.field) == ("invalid_request", field)
    assert refused.detail


@given(st.datetimes(timezones=st.just(UTC)), st.from_regex(r"job_[0-9a-f]{32}", fullmatch=True))
def test_cursor_round_trips(at: datetime, job_id: str) -> None:
    position = Position(at, job_id)
    assert decode_cursor(encode_cursor(position)) == position

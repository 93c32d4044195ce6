"""The facade's pure mapping: every job status is one of OpenAI's four, the Video object has all
thirteen keys, create bodies and list queries are checked before intake's own validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.intake.facade_map import (
    ListQuery,
    Page,
    Problem,
    create_request,
    derived_request,
    json_image,
    list_query,
    page,
    video_id,
    video_object,
)
from shared.contracts import JobRecordV1, JobSpec, JobStatus

SPEC = JobSpec(model="sora-2", size="1280x720", seconds=8, prompt="p")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def record(status: JobStatus, n: int = 0, **changes: object) -> JobRecordV1:
    return JobRecordV1(
        job_id=f"job_{n:032x}", tenant="acme", status=status, spec=SPEC, idempotency_key="k",
        request_hash="0", history={"accepted": T0 + timedelta(seconds=n), status.value: T0},
        **changes,
    )  # fmt: skip


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_status_is_one_of_openais_four(status: JobStatus) -> None:
    video = video_object(record(status, progress=50))
    assert video["status"] in ("queued", "in_progress", "completed", "failed")
    assert len(video) == 13
    assert 0 <= video["progress"] <= 100
    assert (video["progress"] == 100) == (video["status"] == "completed")
    assert (video["error"] is not None) == (video["status"] == "failed")
    assert (video["completed_at"] is not None) == (status.value in {
        "completed", "rejected", "failed", "cancelled", "timed_out"})  # fmt: skip
    assert video["seconds"] == "8"
    assert video["created_at"] == int(T0.timestamp())


def test_a_create_body_becomes_clipline_request_with_openais_defaults() -> None:
    assert create_request({"prompt": "x"}, None) == {
        "prompt": "x", "model": "sora-2", "size": "720x1280", "seconds": 4,
    }  # fmt: skip
    body = create_request({"prompt": "x", "seconds": "12"}, "data:image/png;base64,AA==")
    assert body == {
        "prompt": "x", "model": "sora-2", "size": "720x1280", "seconds": 12,
        "input_reference": "data:image/png;base64,AA==",
    }  # fmt: skip


def test_a_callback_url_goes_through_to_intakes_checks_on_every_kind_of_create() -> None:
    hook = "https://hooks.example.com/a"
    made = create_request({"prompt": "x", "callback_url": hook}, None)
    assert isinstance(made, dict)
    assert made["callback_url"] == hook
    unset = create_request({"prompt": "x", "callback_url": None}, None)
    assert isinstance(unset, dict)
    assert "callback_url" not in unset
    source = video_id("job_" + "b" * 32)
    for kind, fields in (("remix", {}), ("edit", {"video": {"id": source}}),
                         ("extend", {"video": {"id": source}, "seconds": "4"})):  # fmt: skip
        body = derived_request(
            kind,
            {"prompt": "y", "callback_url": hook, **fields},
            source if kind == "remix" else None,
        )
        assert isinstance(body, dict), body
        assert body["callback_url"] == hook


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": "  "}, "prompt", "missing_required_parameter"),
        ({"prompt": "x", "seconds": 8}, "seconds", "invalid_type"),
        ({"prompt": "x", "seconds": "8.5"}, "seconds", "invalid_value"),
        ({"prompt": "x", "model": ["sora-2"]}, "model", "invalid_type"),
        ({"prompt": "x", "n": "2"}, "n", "unknown_parameter"),
        ({"prompt": "x", "idempotency_key": "k"}, "idempotency_key", "unknown_parameter"),
    ],
)
def test_a_bad_create_body_is_a_problem(fields: dict[str, object], param: str, code: str) -> None:
    problem = create_request(fields, None)
    assert isinstance(problem, Problem)
    assert (problem.status, problem.param, problem.code) == (400, param, code)


def test_only_data_urls_are_taken_as_json_images() -> None:
    assert json_image(None) is None
    assert json_image({"image_url": "data:image/png;base64,AA=="}) == "data:image/png;base64,AA=="
    for value in ({"file_id": "file_1"}, {"image_url": "https://x/y.png"}, "data:x", 3):
        assert isinstance(json_image(value), Problem)


def test_pages_follow_after_in_either_order_and_skip_deleted_videos() -> None:
    records = [record(JobStatus.COMPLETED, n) for n in range(5)]
    records[2] = records[2].model_copy(update={"deleted_at": T0})
    shown = [video_id(r.job_id) for r in records if r.deleted_at is None]
    first = page(records, ListQuery(None, 2, descending=False))
    assert isinstance(first, Page)
    assert [video_id(r.job_id) for r in first.data] == shown[:2]
    assert first.has_more
    rest = page(records, ListQuery(shown[1], 2, descending=False))
    assert isinstance(rest, Page)
    assert [video_id(r.job_id) for r in rest.data] == shown[2:]
    assert not rest.has_more
    newest = page(records, ListQuery(None, 1, descending=True))
    assert isinstance(newest, Page)
    assert [video_id(r.job_id) for r in newest.data] == shown[-1:]
    assert isinstance(page(records, ListQuery(video_id(records[2].job_id), 2, False)), Problem)
    empty = page(records, ListQuery(None, 0, descending=True))
    assert isinstance(empty, Page)
    assert (empty.data, empty.has_more) == ([], True)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ListQuery(None, 20, descending=True)),
        ({"limit": "0", "order": "asc", "after": "video_x"}, ListQuery("video_x", 0, False)),
        ({"limit": "100"}, ListQuery(None, 100, descending=True)),
    ],
)
def test_list_queries(params: dict[str, str], expected: ListQuery) -> None:
    assert list_query(params) == expected


@pytest.mark.parametrize("params", [{"limit": "101"}, {"limit": "x"}, {"order": "newest"}])
def test_bad_list_queries_are_problems(params: dict[str, str]) -> None:
    assert isinstance(list_query(params), Problem)

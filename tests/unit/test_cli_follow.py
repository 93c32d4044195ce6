"""The CLI's event stream parser, its progress estimate and what `submit --wait` reports."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from clipline.follow import Estimate, Message, Progress, SseParser, changes, estimated_share
from clipline.jobs_cli import Links, report
from clipline.remote import Target, problem_line
from tests.fake_intake import JOB, record


def parse(text: str) -> list[Message]:
    parser = SseParser()
    return [m for line in text.split("\n") if (m := parser.feed(line)) is not None]


def test_sse_messages_fields_comments_and_multiline_data() -> None:
    text = (
        ": heartbeat\n\n"
        "id: 7\nevent: progress\ndata: {\"progress\": 40,\ndata:  \"upstream_status\": \"x\"}\n\n"
        "event: accepted\ndata:{}\n\n"
        "id: 9\ndata: not json\n\n"
        "retry: 1000\n\n"
    )  # fmt: skip
    assert parse(text) == [
        Message("7", "progress", {"progress": 40, "upstream_status": "x"}),
        Message("7", "accepted", {}),  # the last id holds until another is sent
        Message("9", "message", {"text": "not json"}),
    ]


def test_an_unfinished_message_is_not_handed_on() -> None:
    assert parse("id: 1\nevent: completed\ndata: {}") == []


def test_the_estimate_rises_with_the_clock_and_never_reaches_the_end() -> None:
    shares = [estimated_share(t, 60.0) for t in (0, 10, 30, 59, 60, 120, 600, 10**6)]
    assert shares == sorted(shares)
    assert shares[0] == 0.0
    assert shares[4] == pytest.approx(0.95)
    assert shares[-1] < 0.99


def test_generation_is_shown_estimated_until_upstream_says_more() -> None:
    estimate = Estimate(expected=100.0)
    estimate.see("accepted", {}, now=1000.0)
    assert estimate.view(1000.0) == (0, "accepted", False)
    estimate.see("submitted", {}, now=1000.0)
    assert estimate.view(1040.0) == (38, "generating (estimated)", True)
    estimate.see("progress", {"progress": 70, "upstream_status": "in_progress"}, now=1041.0)
    assert estimate.view(1041.0) == (70, "generating (upstream, in_progress)", False)
    assert estimate.view(1090.0) == (86, "generating (estimated)", True)  # past upstream's
    estimate.see("generated", {}, now=1050.0)
    assert estimate.view(1050.0) == (100, "generated, storing", False)
    estimate.see("completed", {}, now=1051.0)
    assert estimate.view(1051.0) == (100, "completed", False)


def test_a_duration_the_server_gives_replaces_the_guess() -> None:
    estimate = Estimate(expected=600.0)
    estimate.see("submitted", {"occurred_at": "2026-12-07T12:00:00+00:00",
                               "expected_seconds": 20}, now=0.0)  # fmt: skip
    started = estimate.started
    assert started is not None
    assert estimate.view(started + 10)[:2] == (48, "generating (estimated)")


def test_the_bar_moves_between_events_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = Progress(Estimate(expected=0.5), out)
    bar.see(Message("1", "submitted", {}))
    first = bar.last
    bar.estimate.started = (bar.estimate.started or 0) - 0.4  # as if 0.4 s had gone by
    bar.draw()
    assert bar.last > first
    assert f"~{bar.last}% generating (estimated)" in out.getvalue()


def test_polled_records_become_events_once_each() -> None:
    before = record("submitted", history={"accepted": "2026-12-07T12:00:00+00:00",
                                          "submitted": "2026-12-07T12:00:02+00:00"})  # fmt: skip
    assert [m.event for m in changes(None, before)] == ["accepted", "submitted"]
    after = record("completed", progress=100)
    after["history"] = before["history"] | {"completed": "2026-12-07T12:00:09+00:00"}
    assert [m.event for m in changes(before, after)] == ["progress", "completed"]
    assert list(changes(after, after)) == []


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ({"error": {"reason": "invalid_request", "detail": "no prompt", "field": "prompt"}},
         "invalid_request: no prompt (prompt)"),
        ({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no job"},
         "Not Found: no job"),
        ({"type": "t", "title": "Unprocessable", "reason": "invalid_size", "detail": "d",
          "field": "size"}, "invalid_size: d (size)"),
        ({"detail": "Not Found"}, "Not Found"),
        (["not", "an", "object"], "fallback"),
        ({"other": 1}, "fallback"),
    ],
)  # fmt: skip
def test_both_error_envelopes_read_as_reason_detail_field(body: object, line: str) -> None:
    assert problem_line(body, "fallback") == line


def test_the_report_says_what_the_record_says(capsys: pytest.CaptureFixture[str]) -> None:
    asset = {"variant": "video", "bucket": "b", "key": f"acme/{JOB}/video.mp4", "size_bytes": 10}
    done = record("completed", assets=[asset])
    assert report(done, Target("http://x", "k", "test"), argparse.Namespace(verify=False)) == 0
    out = capsys.readouterr().out
    assert f"job {JOB} completed in 7.0s" in out
    assert "video       (no download link) (10 bytes)" in out
    assert str(asset["key"]) not in out  # a remote target's S3 is not the user's to read
    assert "cost: $0.40 (400000 micro-dollars)" in out
    links = Links({"video": "https://s3.example.com/v?X-Amz-Signature=s"}, "2026-12-07T13:00:00")
    local = Target("http://x", "k", "test", local=Path("/tmp/stack"))
    assert report(done, local, argparse.Namespace(verify=False), links) == 0
    out = capsys.readouterr().out
    assert "video       https://s3.example.com/v?X-Amz-Signature=s (10 bytes)" in out
    assert f"stored at s3://b/{asset['key']}" in out  # the local stack's: both, each named
    assert "links valid until 2026-12-07T13:00:00" in out


def test_a_failed_record_is_reported_failed(capsys: pytest.CaptureFixture[str]) -> None:
    failed = record("failed", reason="upstream_failed", detail="no")
    assert report(failed, Target("http://x", "k", "test"), argparse.Namespace()) == 1
    assert f"job {JOB} failed: upstream_failed: no" in capsys.readouterr().out


def test_an_event_line_is_one_json_object() -> None:
    assert json.loads(Message("3", "progress", {"progress": 5}).as_json()) == {
        "id": "3", "event": "progress", "data": {"progress": 5}
    }  # fmt: skip

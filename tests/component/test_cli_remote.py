"""The job commands against a fake intake on loopback: every exit code, errors in one line,
--json output, Server-Sent Events followed across a dropped connection, and polling where the
server has no event stream."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipline import follow, remote
from clipline.cli import main
from tests.conftest import repo_root
from tests.fake_intake import API_KEY, JOB, Fake, record, serving

ENDED: list[tuple[str, dict[str, Any]]] = [
    ("accepted", {"job_id": JOB, "occurred_at": "2026-12-07T12:00:00+00:00"}),
    ("admitted", {"job_id": JOB}),
    ("submitted", {"job_id": JOB, "upstream_id": "video_1"}),
    ("progress", {"job_id": JOB, "progress": 40, "upstream_status": "in_progress"}),
    ("generated", {"job_id": JOB}),
    ("completed", {"job_id": JOB}),
]


@pytest.fixture
def fake() -> Fake:
    return Fake()


@pytest.fixture
def url(fake: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """The fake served, and chosen through CLIPLINE_URL and CLIPLINE_API_KEY."""
    for name in (remote.PROFILE_ENV, remote.CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(remote, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(follow, "RECONNECT_DELAYS", (0.0,))
    monkeypatch.setattr(follow, "POLL_SECONDS", 0.05)
    with serving(fake) as base:
        monkeypatch.setenv(remote.URL_ENV, base)
        monkeypatch.setenv(remote.KEY_ENV, API_KEY)
        yield base


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--home", "/nonexistent/clipline-home", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# ---- submit -------------------------------------------------------------------------------


def test_submit_posts_with_an_idempotency_key_and_prints_json(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "submit", "--prompt", "a harbour", "--json",
                       "--idempotency-key", "mine-1")  # fmt: skip
    assert code == 0
    assert json.loads(out) == {"job_id": JOB, "tenant": "acme", "status": "accepted"}
    [(method, path, headers)] = fake.asked
    assert (method, path, headers["Idempotency-Key"]) == ("POST", "/v1/jobs", "mine-1")


def test_submit_sends_the_defaults_for_a_new_video(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "submit", "--prompt", "a harbour")[0] == 0
    assert fake.submitted == [
        {"prompt": "a harbour", "model": "sora-2", "size": "720x1280", "seconds": 4}
    ]


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        (["--remix", JOB], {"kind": "remix", "source_job_id": JOB}),
        (["--edit", JOB, "--model", "sora-2"], {"kind": "edit", "source_job_id": JOB,
                                                "model": "sora-2"}),
        (["--extend", JOB, "--seconds", "8"], {"kind": "extend", "source_job_id": JOB,
                                               "seconds": 8}),
    ],
)  # fmt: skip
def test_remix_edit_and_extend_name_the_source_and_inherit_the_rest(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], argv: list[str], body: dict[str, Any]
) -> None:
    assert cli(capsys, "submit", "--prompt", "again", *argv)[0] == 0
    assert fake.submitted == [{"prompt": "again", **body}]


def test_a_callback_url_is_sent_and_its_refusal_exits_1_naming_the_field(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = "https://hooks.example.com/clipline"
    assert cli(capsys, "submit", "--prompt", "a harbour", "--callback-url", hook)[0] == 0
    assert (
        cli(capsys, "submit", "--prompt", "again", "--remix", JOB, "--callback-url", hook)[0] == 0
    )
    assert [b.get("callback_url") for b in fake.submitted] == [hook, hook]
    fake.fail["submit"] = (422, {
        "type": "about:blank", "title": "invalid_callback_url", "status": 422,
        "detail": "callback_url names a private, loopback or link-local address (10.0.0.1)",
        "reason": "invalid_callback_url", "field": "callback_url",
    })  # fmt: skip
    code, _, err = cli(capsys, "submit", "--prompt", "x", "--callback-url", "http://10.0.0.1/")
    assert code == 1
    assert "invalid_callback_url" in err
    assert "callback_url" in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--extend", JOB], "--extend needs --seconds"),
        (["--remix", JOB, "--seconds", "8"], "--remix takes no --seconds"),
        (["--remix", "job_nope"], "is not a job id"),
    ],
)
def test_a_bad_kind_request_is_a_usage_error_before_anything_is_sent(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    code, _, err = cli(capsys, "submit", "--prompt", "again", *argv)
    assert code == 3
    assert said in err
    assert fake.submitted == []


def test_submit_without_a_key_sends_a_new_one_each_time(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "submit", "--prompt", "x")
    cli(capsys, "submit", "--prompt", "x")
    keys = [headers["Idempotency-Key"] for _, _, headers in fake.asked]
    assert len(set(keys)) == 2
    assert all(k.startswith("cli:") for k in keys)


@pytest.mark.parametrize(
    ("status", "body", "line"),
    [
        (422, {"error": {"reason": "invalid_size", "detail": "sora-2 makes 720x1280 or "
                         "1280x720", "field": "size"}},
         "refused (422): invalid_size: sora-2 makes 720x1280 or 1280x720 (size)"),
        (409, {"type": "https://clipline.dev/problems/idempotency_conflict",
               "title": "Idempotency conflict", "status": 409, "reason": "idempotency_conflict",
               "detail": "this key names another request", "field": "idempotency_key"},
         "refused (409): idempotency_conflict: this key names another request "
         "(idempotency_key)"),
        (402, {"type": "about:blank", "title": "budget_exceeded", "status": 402,
               "detail": "needs 400000"}, "refused (402): budget_exceeded: needs 400000"),
        (413, "<html>too large</html>", "refused (413): HTTP 413: <html>too large</html>"),
    ],
)  # fmt: skip
def test_a_refusal_exits_1_with_reason_detail_and_field(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], status: int, body: object,
    line: str,
) -> None:  # fmt: skip
    fake.fail["submit"] = (status, body)
    code, out, err = cli(capsys, "submit", "--prompt", "x")
    assert code == 1
    assert out == ""
    assert err == f"error: submit: {line}\n"


def test_a_rejected_key_is_a_usage_error_and_never_printed(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "ck_fedcba9876543210_" + "w" * 43
    monkeypatch.setenv(remote.KEY_ENV, wrong)
    code, out, err = cli(capsys, "submit", "--prompt", "x")
    assert code == 3
    assert "the API key was not accepted (unauthorized: unknown API key)" in err
    assert wrong not in out + err


def test_5xx_is_retried_then_unreachable(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail["submit"] = (503, {"error": {"reason": "unavailable", "detail": "retry"}})
    code, _, err = cli(capsys, "submit", "--prompt", "x", "--idempotency-key", "same")
    assert code == 2
    assert err == "error: submit: the server failed (503): unavailable: retry\n"
    keys = [h["Idempotency-Key"] for m, _, h in fake.asked if m == "POST"]
    assert keys == ["same"] * (1 + len(remote.RETRY_DELAYS))  # the same job, each time


def test_submit_with_the_server_down_exits_2_fast_in_one_line(tmp_path: Path) -> None:
    """A real process, a closed port: no NATS, no traceback, one line, seconds not minutes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPLINE_")}
    env |= {"PYTHONPATH": str(repo_root()), "CLIPLINE_URL": "http://127.0.0.1:9",
            "CLIPLINE_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path)}  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "clipline.cli", "--home", str(tmp_path), "submit", "--prompt", "x"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: cannot reach clipline at http://127.0.0.1:9: ")
    assert done.stderr.count("\n") == 1
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["submit", "--prompt", "x", "--image", "/nonexistent/first.png"],
         "--image: no such file: /nonexistent/first.png"),
        (["submit", "--prompt", "x", "--image", "notes.txt"], "--image must be a .jpg"),
        (["jobs", "show", "job_nope"], "is not a job id"),
        (["events", "../etc"], "is not a job id"),
        (["jobs", "list", "--limit", "0"], "--limit must be 1 or more"),
    ],
)  # fmt: skip
def test_usage_errors_exit_3_before_anything_is_sent(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    code, _, err = cli(capsys, *argv)
    assert code == 3
    assert says in err
    assert fake.asked == []


def test_download_to_an_output_that_is_a_file_is_a_usage_error(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    code, _, err = cli(capsys, "download", JOB, "-o", str(a_file))
    assert code == 3
    assert f"-o {a_file}: is a file, not a folder" in err
    assert fake.asked == []


def test_bad_arguments_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["jobs", "list", "--limit", "many"])
    assert exited.value.code == 3
    assert "invalid int value" in capsys.readouterr().err


def test_a_url_without_a_key_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(remote.KEY_ENV)
    code, _, err = cli(capsys, "jobs", "list")
    assert code == 3
    assert f"no API key for {url} (CLIPLINE_URL)" in err


# ---- jobs list / show ---------------------------------------------------------------------


def test_jobs_list_follows_cursors_and_prints_one_job_per_line(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [record("completed", job_id=f"job_{i:032x}") for i in range(5)]
    fake.pages = [{"data": jobs[:2], "next_cursor": "1"}, {"data": jobs[2:4], "next_cursor": "2"},
                  {"data": jobs[4:], "next_cursor": None}]  # fmt: skip
    code, out, _ = cli(capsys, "jobs", "list", "--status", "completed", "--limit", "4", "--json")
    assert code == 0
    assert [json.loads(line)["job_id"] for line in out.splitlines()] == [
        j["job_id"] for j in jobs[:4]
    ]
    paths = [path for _, path, _ in fake.asked]
    assert paths == ["/v1/jobs?limit=4&status=completed",
                     "/v1/jobs?limit=2&status=completed&cursor=1"]  # fmt: skip


def test_jobs_list_accepts_the_older_answer_and_filters_it_here(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [record("completed", job_id=f"job_{1:032x}"), record("failed", job_id=f"job_{2:032x}"),
            record("completed", job_id=f"job_{3:032x}")]  # fmt: skip
    fake.pages = [{"tenant": "acme", "jobs": jobs}]
    code, out, _ = cli(capsys, "jobs", "list", "--status", "completed", "--limit", "1")
    assert code == 0
    assert f"job_{1:032x}" in out
    assert f"job_{3:032x}" not in out
    assert out.splitlines()[0].split() == [
        "JOB", "STATUS", "KIND", "SOURCE", "MODEL", "SIZE", "SECONDS", "ACCEPTED", "COST"
    ]  # fmt: skip


SOURCE = "job_" + "a" * 32
EXTENSION = record(
    "completed", job_id=f"job_{7:032x}", deleted_at="2026-12-07T12:05:00+00:00",
    spec={"model": "sora-2", "size": "720x1280", "seconds": 4, "prompt": "on", "kind": "extend",
          "source_job_id": SOURCE, "total_seconds": 12, "extensions": 1},
    assets=[{"variant": "video", "bucket": "b", "key": "k", "size_bytes": 9, "sha256": "0" * 64,
             "content_type": "video/mp4"}],
)  # fmt: skip


def test_jobs_list_shows_kind_source_stitched_seconds_and_deleted_jobs(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    remix = record("running", job_id=f"job_{8:032x}",
                   spec={**record()["spec"], "kind": "remix", "source_job_id": SOURCE})  # fmt: skip
    fake.pages = [{"data": [EXTENSION, remix, record()], "next_cursor": None}]
    code, out, _ = cli(capsys, "jobs", "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [[*r[1:4], r[6]] for r in rows] == [
        ["completed(deleted)", "extend", SOURCE, "12(+4)"],
        ["running", "remix", SOURCE, "4"],
        ["completed", "generate", "-", "4"],
    ]


def test_jobs_show_names_the_source_the_stitched_length_and_a_deletion(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.job_id, fake.records = EXTENSION["job_id"], [EXTENSION]
    code, out, _ = cli(capsys, "jobs", "show", EXTENSION["job_id"])
    assert code == 0
    assert f"kind      extend of {SOURCE} (extension 1 of the chain)" in out
    assert "12s stitched (+4s added)" in out
    assert "deleted   2026-12-07T12:05:00" in out
    assert "asset " not in out  # removed: not offered as if it could be downloaded
    fake.records = [record()]
    fake.job_id = JOB
    plain = cli(capsys, "jobs", "show", JOB)[1]
    assert ("kind " not in plain, "deleted " not in plain) == (True, True)
    assert "sora-2 720x1280 4s: 'a harbour'" in plain


def test_connection_options_may_come_before_the_command(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(remote.URL_ENV)
    monkeypatch.delenv(remote.KEY_ENV)
    fake.pages = [{"data": [record()], "next_cursor": None}]
    code, out, err = cli(capsys, "--url", url, "--api-key", API_KEY, "jobs", "list", "--json")
    assert code == 0, err
    assert json.loads(out)["job_id"] == JOB
    # one after the command wins over one before it
    code, _, err = cli(capsys, "--url", "http://127.0.0.1:9", "--api-key", API_KEY,
                       "jobs", "show", JOB, "--url", url)  # fmt: skip
    assert code == 0, err
    code, _, err = cli(capsys, "--api-key", API_KEY, "status")
    assert code == 3
    assert "--api-key: only the job commands take it" in err


def test_jobs_show_json_is_the_record_and_an_unknown_job_exits_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "jobs", "show", JOB, "--json")
    assert (code, json.loads(out)) == (0, record())
    code, _, err = cli(capsys, "jobs", "show", "job_" + "d" * 32)
    assert code == 1
    assert f"no job job_{'d' * 32} for this API key (CLIPLINE_URL)" in err


def test_a_broken_pipe_exits_quietly(tmp_path: Path, fake: Fake) -> None:
    fake.pages = [{"data": [record(job_id=f"job_{i:032x}") for i in range(100)]}]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPLINE_")}
    with serving(fake) as base:
        env |= {"PYTHONPATH": str(repo_root()), "CLIPLINE_URL": base,
                "CLIPLINE_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path)}  # fmt: skip
        shell = f"{sys.executable} -m clipline.cli jobs list --limit 100 --json | head -1"
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", shell], capture_output=True, text=True, env=env,
            timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["job_id"] == f"job_{0:032x}"


# ---- following ----------------------------------------------------------------------------


def test_wait_follows_the_stream_across_a_dropped_connection(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events = ENDED
    fake.drop_after = 3
    code, out, err = cli(capsys, "submit", "--prompt", "x", "--wait")
    assert code == 0, err
    assert f"job {JOB} completed in 7.0s" in out
    streams = [h for _, p, h in fake.asked if p.endswith("/events")]
    assert [h.get("Last-Event-ID") for h in streams] == [None, "3"]
    assert all(h["Accept"] == "text/event-stream" for h in streams)
    assert " 40% generating (upstream, in_progress)" in err  # the bar showed upstream's figure


STORED = [{"variant": "video", "bucket": "clipline-assets", "key": "acme/job/video.mp4",
           "size_bytes": 9, "sha256": "0" * 64, "content_type": "video/mp4"}]  # fmt: skip


def test_a_remote_wait_prints_download_links_not_s3_locations(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events, fake.records, fake.blobs = ENDED, [record(assets=STORED)], {"video": b"x"}
    code, out, err = cli(capsys, "submit", "--prompt", "x", "--wait")
    assert code == 0, err
    assert f"  video       {url}/blob/video?X-Amz-Signature=s (9 bytes)" in out
    assert "s3://" not in out  # a remote user cannot open the stack's S3
    assert f"`clipline download {JOB}` saves the files" in out
    assert [p for _, p, _ in fake.asked][-1] == f"/v1/jobs/{JOB}/assets"


def test_without_links_a_wait_still_succeeds_and_points_to_download(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events, fake.records = ENDED, [record(assets=STORED)]  # the server gives no link
    code, out, err = cli(capsys, "submit", "--prompt", "x", "--wait")
    assert code == 0, err
    assert "  video       (no download link) (9 bytes)" in out
    assert f"`clipline download {JOB}` saves the files, verified" in out


def test_events_json_resumes_without_losing_or_repeating_an_event(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events = ENDED
    fake.drop_after = 2
    code, out, _ = cli(capsys, "events", JOB, "-f", "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["id"], m["event"]) for m in lines] == [
        (str(i), kind) for i, (kind, _) in enumerate(ENDED, start=1)
    ]
    assert lines[3]["data"]["progress"] == 40


def test_a_stream_that_keeps_dropping_gives_up_as_unreachable(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events = [("accepted", {"job_id": JOB})]  # never a terminal event: it ends early
    code, _, err = cli(capsys, "events", JOB, "-f")
    assert code == 2
    assert f"the event stream of {JOB} keeps ending early" in err
    assert fake.streams == 1 + follow.MAX_RECONNECTS


def test_without_the_events_route_it_polls_the_record(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events_route = False
    fake.records = [
        record("submitted", history={"accepted": "2026-12-07T12:00:00+00:00",
                                     "submitted": "2026-12-07T12:00:01+00:00"}),
        record("submitted", progress=50, history={"accepted": "2026-12-07T12:00:00+00:00",
                                                  "submitted": "2026-12-07T12:00:01+00:00"}),
        record("completed"),
    ]  # fmt: skip
    code, out, _ = cli(capsys, "events", JOB, "-f", "--json")
    assert code == 0
    assert [json.loads(line)["event"] for line in out.splitlines()] == [
        "accepted", "submitted", "progress", "completed"
    ]  # fmt: skip


def test_wait_on_a_failed_job_exits_1_with_the_records_reason(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.events = [("accepted", {}), ("failed", {"reason": "upstream_failed"})]
    fake.records = [record("failed", reason="upstream_failed", detail="the model refused")]
    code, out, _ = cli(capsys, "submit", "--prompt", "x", "--wait")
    assert code == 1
    assert f"job {JOB} failed: upstream_failed: the model refused" in out


def test_a_terminal_event_the_record_does_not_bear_out_keeps_it_following(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged `completed` in the stream only makes the record be read; it says the job still
    runs, so the CLI follows on (from that event on) until the record says it ended."""
    fake.events = [("submitted", {}), ("completed", {"timings": {"total_seconds": 12345}}),
                   ("completed", {})]  # fmt: skip
    fake.end_after = 2  # as the server ends a stream after a terminal event
    fake.records = [record("generating"), record("completed")]
    code, out, _ = cli(capsys, "submit", "--prompt", "x", "--wait")
    assert code == 0
    assert "12345" not in out
    assert [h.get("Last-Event-ID") for _, p, h in fake.asked if p.endswith("/events")] == [
        None, "2"
    ]  # fmt: skip


def test_events_of_an_unknown_job_exit_1(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "events", "job_" + "e" * 32)
    assert code == 1
    assert "no job" in err


def test_cancel_reports_and_an_ended_job_is_a_refusal(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "cancel", JOB)
    assert (code, out) == (0, f"job {JOB} is cancelling\n")
    code, out, _ = cli(capsys, "cancel", JOB, "--json")
    assert (code, json.loads(out)["status"]) == (0, "cancelling")
    fake.fail["cancel"] = (409, {"error": {"reason": "already_ended", "detail": "completed"}})
    code, _, err = cli(capsys, "cancel", JOB)
    assert code == 1
    assert "refused (409): already_ended: completed" in err


def test_download_from_a_remote_goes_through_its_links_and_checks_each_file(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    video, thumb = b"\x00\x00\x00\x18ftypmp42" * 100, b"RIFF....WEBPVP8 "
    fake.blobs = {"video": video, "thumbnail": thumb}
    assets = [
        {"variant": v, "bucket": "b", "key": f"acme/{JOB}/{v}.{ext}", "size_bytes": len(data),
         "sha256": hashlib.sha256(data).hexdigest(), "content_type": "x/y"}
        for v, ext, data in (("video", "mp4", video), ("thumbnail", "webp", thumb))
    ]  # fmt: skip
    fake.records = [record("completed", assets=assets)]
    code, out, err = cli(capsys, "download", JOB, "--variant", "video", "thumbnail", "-o",
                         str(tmp_path / "out"))  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "out" / f"{JOB}-video.mp4").read_bytes() == video
    assert (tmp_path / "out" / f"{JOB}-thumbnail.webp").read_bytes() == thumb
    assert len(out.splitlines()) == 2
    links = [h for _, p, h in fake.asked if p.startswith("/blob/")]
    assert len(links) == 2
    assert all("Authorization" not in h for h in links)  # the key stays with intake

    fake.blobs["video"] = video[:-1] + b"!"  # the store hands out other bytes
    code, _, err = cli(capsys, "download", JOB, "--variant", "video", "-o", str(tmp_path / "2"))
    assert code == 1
    assert "video: not kept:" in err
    assert list((tmp_path / "2").iterdir()) == []


def test_a_repeated_key_says_the_job_already_exists(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.submit_answer = (200, {"job_id": JOB, "tenant": "acme", "status": "completed"},
                          "application/json")  # fmt: skip
    code, out, _ = cli(capsys, "submit", "--prompt", "x", "--idempotency-key", "again")
    assert (code, out) == (0, f"job {JOB} already exists (tenant acme, completed)\n")


def test_an_answer_that_is_not_intakes_is_unreachable_not_a_traceback(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.submit_answer = (202, "<html>a proxy</html>", "text/html")
    code, _, err = cli(capsys, "submit", "--prompt", "x")
    assert code == 2
    assert "answered no job id" in err


@pytest.mark.parametrize("live", [False, True])
def test_events_without_follow_print_what_there_is_and_stop(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], live: bool
) -> None:
    """A running job: the stream replays its events, then ends (an older server) or stays open
    with heartbeats only (live); either way `events JOB` prints them and stops."""
    fake.events = ENDED[:4]
    fake.hold_open = live
    try:
        code, out, _ = cli(capsys, "events", JOB, "--idle", "0.3")
    finally:
        fake.hold_open = False
    assert code == 0
    assert [line.split()[-1] for line in out.splitlines()][:3] == [
        "accepted", "admitted", "submitted"
    ]  # fmt: skip
    assert "progress 40% in_progress" in out.splitlines()[3]
    assert fake.streams == 1


def test_a_profile_selects_the_server_over_the_environment(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    profiles = tmp_path / "config" / "clipline" / "profiles.toml"
    profiles.parent.mkdir(parents=True)
    profiles.write_text(f'[profiles.here]\nurl = "{url}"\napi_key = "{API_KEY}"\n')
    profiles.chmod(0o600)
    monkeypatch.setenv(remote.URL_ENV, "http://127.0.0.1:9")  # the profile wins over it
    monkeypatch.setenv(remote.KEY_ENV, "ck_not_this_one")
    code, out, err = cli(capsys, "jobs", "show", JOB, "--profile", "here", "--json")
    assert code == 0, err
    assert json.loads(out)["job_id"] == JOB
    monkeypatch.setenv(remote.PROFILE_ENV, "here")  # from the environment it does not
    code, _, err = cli(capsys, "jobs", "show", JOB)
    assert code == 2
    assert "cannot reach clipline at http://127.0.0.1:9" in err

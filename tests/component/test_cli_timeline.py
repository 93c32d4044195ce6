"""`clipline timeline JOB` against a fake intake on loopback: the table (step, service, at,
+previous, total, cost, reason) with the price, charge and notes around it, `--json`, and the
exit codes: 0 shown, 1 no such job (or no timeline route), 2 a failing server, 3 usage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clipline import remote
from clipline.cli import main
from tests.fake_intake import API_KEY, JOB, Fake, record, serving


def step(name: str, service: str, at: str, previous: float, total: float, **more: Any) -> Any:
    base = {"step": name, "source": "event", "service": service, "at": at,
            "since_previous_seconds": previous, "since_start_seconds": total, "seq": 1,
            "cost_micros": None, "cost_kind": None, "reason": None, "detail": None,
            "progress": None, "trace_id": None}  # fmt: skip
    return base | more


TIMELINE: dict[str, Any] = {
    "job_id": JOB, "tenant": "acme", "status": "failed", "trace_id": "t" * 32,
    "cost_micros": 400_000, "charged_micros": 0, "settled": True, "total_seconds": 3.5,
    "events_read": 3, "submit_attempts": 2, "errors": {"poller": 1},
    "notes": ["no event found for admitted (older than the stream keeps, or not announced "
              "yet): the record's time is shown"],
    "steps": [
        step("accepted", "intake", "2026-12-07T12:00:00.010000Z", 0.01, 0.01),
        step("admitted", "pricing_guard", "2026-12-07T12:00:00.210000Z", 0.2, 0.21,
             source="record", cost_micros=400_000, cost_kind="reserved"),
        step("progress", "poller", "2026-12-07T12:00:01.000000Z", 0.79, 1.0, progress=40),
        step("failed", "poller", "2026-12-07T12:00:03.500000Z", 2.5, 3.5,
             reason="upstream_failed", detail="the upstream refused the prompt (moderation)"),
    ],
}  # fmt: skip


@pytest.fixture
def fake() -> Fake:
    return Fake(records=[record("failed")], timeline=TIMELINE)


@pytest.fixture
def url(fake: Fake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for name in (remote.PROFILE_ENV, remote.CONFIG_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(remote, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    with serving(fake) as base:
        monkeypatch.setenv(remote.URL_ENV, base)
        monkeypatch.setenv(remote.KEY_ENV, API_KEY)
        yield base


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--home", "/nonexistent/clipline-home", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_the_table_shows_each_step_with_its_service_times_cost_and_reason(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "timeline", JOB)

    assert code == 0  # shown, whatever the job's outcome (as `jobs show`)
    lines = out.splitlines()
    assert lines[0] == f"job {JOB}  failed  2026-12-07  trace {'t' * 32}"
    assert lines[2].split() == [
        "STEP", "SERVICE", "AT", "(UTC)", "+PREVIOUS", "TOTAL", "COST", "REASON"
    ]  # fmt: skip
    assert lines[3].split() == ["accepted", "intake", "12:00:00.010", "+0.01s", "0.01s"]
    assert lines[4].split() == [
        "admitted", "(record)", "pricing_guard", "12:00:00.210", "+0.20s", "0.21s", "$0.40",
        "reserved",
    ]  # fmt: skip
    assert lines[5].split()[:3] == ["progress", "40%", "poller"]
    assert lines[6].split()[:5] == ["failed", "poller", "12:00:03.500", "+2.50s", "3.50s"]
    assert "upstream_failed: the upstream refused the prompt (moderat..." in lines[6]
    assert "price    $0.40" in lines
    assert "charged  $0.00 (settled)" in lines
    assert "retries  2 upstream create attempts; handling errors: poller 1" in lines
    assert lines[-1].startswith("note     no event found for admitted")
    assert fake.asked[-1][:2] == ("GET", f"/v1/jobs/{JOB}/timeline")


def test_json_prints_the_timeline_as_the_server_answered_it(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "timeline", JOB, "--json")

    assert code == 0
    assert json.loads(out) == TIMELINE


def test_an_unknown_job_exits_1(url: str, fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    fake.job_id = "job_" + "d" * 32

    code, out, err = cli(capsys, "timeline", JOB)

    assert (code, out) == (1, "")
    assert f"no job {JOB} for this API key" in err


def test_an_intake_without_the_route_exits_1_and_says_where_to_look(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.timeline = None

    code, _, err = cli(capsys, "timeline", JOB)

    assert code == 1
    assert "has no job timeline (an older intake)" in err
    assert f"clipline jobs show {JOB}" in err


def test_a_failing_server_exits_2_and_a_bad_job_id_3(
    url: str, fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.timeline = {"not": "a timeline"}
    assert cli(capsys, "timeline", JOB)[0] == 2
    assert cli(capsys, "timeline", "job_nope")[0] == 3

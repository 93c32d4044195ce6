"""`clipline cancel`: what it prints and its exit status for each of intake's answers."""

from __future__ import annotations

from typing import Any

import pytest

from clipline.cli import report_cancel

JOB = "job_" + "a" * 32


@pytest.mark.parametrize(
    ("code", "body", "status", "says"),
    [
        (202, {"status": "cancelling"}, 0, f"job {JOB} is cancelling (tenant acme)"),
        (200, {"status": "cancelling"}, 0, f"job {JOB} was already cancelling"),
        (200, {"status": "cancelled", "detail": "cancelled before submission"}, 0,
         f"job {JOB} is cancelled: cancelled before submission"),
        (409, {"error": {"reason": "already_ended", "detail": f"job {JOB} is completed",
                         "status": "completed"}}, 1,
         f"cannot cancel job {JOB} (409 already_ended): job {JOB} is completed"),
        (404, {"error": {"reason": "not_found", "detail": "no job"}}, 1, "(404 not_found)"),
        (503, {"error": {"reason": "unavailable", "detail": "retry it"}}, 2, "(503 unavailable)"),
    ],
)  # fmt: skip
def test_each_answer_has_its_line_and_exit_status(
    capsys: pytest.CaptureFixture[str], code: int, body: dict[str, Any], status: int, says: str
) -> None:
    assert report_cancel(JOB, "acme", code, body) == status
    assert says in capsys.readouterr().out

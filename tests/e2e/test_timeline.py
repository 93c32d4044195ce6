"""A job's timeline on the embedded stack (the shared one): one job run to its end and its
charge settled, then GET /v1/jobs/{id}/timeline lists every lifecycle step in order from
intake's acceptance to storage's completion, each named with its service, no duration
negative, the settled charge and the trace; `clipline timeline` prints the same steps."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from clipline.cli import main
from clipline.stack import StackState
from tests.e2e.harness import as_tenant, wait_for

pytestmark = pytest.mark.e2e
DEADLINE = 90.0
LIFE = [
    ("accepted", "intake"),
    ("admitted", "pricing_guard"),
    ("submitting", "submitter"),
    ("submitted", "submitter"),
    ("generated", "poller"),
    ("storing", "storage"),
    ("completed", "storage"),
]


@pytest.fixture
def stack(surfaces_stack: StackState) -> StackState:
    """The e2e modules' shared stack (tests/e2e/conftest.py)."""
    return surfaces_stack


def test_a_jobs_timeline_runs_from_intake_to_storage_with_its_charge(
    stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = as_tenant(stack, "acme")
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a lighthouse"}
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=stack.intake_url, timeout=10, headers=auth) as http:
        posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["job_id"]

        def settled() -> bool:
            seen.update(http.get(f"/v1/jobs/{job_id}/timeline").json())
            return seen["status"] in {"completed", "failed"} and seen["settled"]

        wait_for(settled, f"job {job_id} to end and be charged", DEADLINE)
        record = http.get(f"/v1/jobs/{job_id}").json()

    steps = seen["steps"]
    assert seen["status"] == "completed", seen
    shown = [(s["step"], s["service"]) for s in steps if s["step"] != "progress"]
    assert shown == LIFE, steps
    assert all(s["service"] == "poller" for s in steps if s["step"] == "progress")
    assert all(s["since_previous_seconds"] >= 0 for s in steps), steps
    totals = [s["since_start_seconds"] for s in steps]
    assert totals == sorted(totals)
    assert totals[0] >= 0
    assert seen["total_seconds"] == totals[-1] > 0
    from_events = {s["step"] for s in steps if s["source"] == "event"}
    assert {"accepted", "admitted", "submitted", "generated", "completed"} <= from_events
    assert seen["notes"] == []
    assert seen["charged_micros"] == record["charged_micros"] > 0
    assert seen["cost_micros"] == record["cost_micros"]
    [admitted] = [s for s in steps if s["step"] == "admitted"]
    assert (admitted["cost_kind"], admitted["cost_micros"]) == ("reserved", record["cost_micros"])
    assert seen["trace_id"] == record["trace_id"]

    key = auth["Authorization"].removeprefix("Bearer ")
    connection = ["--url", stack.intake_url, "--api-key", key]
    assert main(["timeline", job_id, *connection, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == steps
    assert main(["timeline", job_id, *connection]) == 0
    table = capsys.readouterr().out
    for step, service in LIFE:
        assert any(line.split()[:2] in ([step, service], [step, "(record)"])
                   for line in table.splitlines()), (step, table)  # fmt: skip
    assert "(settled)" in table

"""A job's events over SSE on the embedded stack: submitted over HTTP, followed from
GET /v1/jobs/{id}/events to its `completed` event, after which the stream ends by itself; the
record agrees. Then the same stream again replays it whole, and resumes after an id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from clipline.stack import StackState
from tests.e2e.harness import as_tenant

pytestmark = pytest.mark.e2e
DEADLINE = 90.0


@pytest.fixture
def stack(surfaces_stack: StackState) -> StackState:
    """The e2e modules' shared stack (tests/e2e/conftest.py)."""
    return surfaces_stack


def events(http: httpx.Client, job_id: str, **headers: str) -> list[tuple[int, str, Any]]:
    """(id, kind, data) of every message, until the server ends the stream."""
    found: list[tuple[int, str, Any]] = []
    fields: dict[str, str] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line:
                if "event" in fields:
                    found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return found


def test_a_job_is_followed_to_its_end_and_replayed(stack: StackState) -> None:
    auth = as_tenant(stack, "acme")
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a paper boat"}
    timeout = httpx.Timeout(10, read=DEADLINE)
    with httpx.Client(base_url=stack.intake_url, timeout=timeout, headers=auth) as http:
        posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert posted.status_code == 202
        job_id = posted.json()["job_id"]

        live = events(http, job_id)
        record = http.get(f"/v1/jobs/{job_id}").json()
        replayed = events(http, job_id)
        resumed = events(http, job_id, **{"Last-Event-ID": str(live[1][0])})

    kinds = [kind for _, kind, _ in live]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "completed"
    assert {"admitted", "submitted", "generated"} <= set(kinds)
    assert all(data["job_id"] == job_id for _, _, data in live)
    ids = [seq for seq, _, _ in live]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert record["status"] == "completed"
    assert replayed == live
    assert resumed == live[2:]

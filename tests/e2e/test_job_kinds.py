"""Remix and extend on the embedded stack: a generate, then a remix and an extension of it,
all completed; each made by exactly one upstream create of its kind from the source's upstream
video (the simulator's accounting), and each priced and charged its own seconds at the
registry's price (an extension: the seconds it adds, not the stitched total)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from clipline.stack import StackState
from shared.registry import load_registry
from tests.e2e.harness import as_tenant, wait_for

pytestmark = pytest.mark.e2e
DEADLINE = 90.0
TERMINAL = {"completed", "failed", "rejected", "timed_out", "cancelled"}


@pytest.fixture
def stack(surfaces_stack: StackState) -> StackState:
    """The e2e modules' shared stack (tests/e2e/conftest.py)."""
    return surfaces_stack


def finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job's record once it ended and its charge is settled (or it ended otherwise)."""
    seen: dict[str, Any] = {}

    def ended() -> bool:
        seen.update(http.get(f"/v1/jobs/{job_id}").json())
        settled = seen.get("charged_micros") is not None
        return seen.get("status") in TERMINAL and (settled or seen["status"] != "completed")

    wait_for(ended, f"job {job_id} to end and be charged", DEADLINE)
    return seen


def test_a_remix_and_an_extension_of_a_generated_video(stack: StackState) -> None:
    per_second = load_registry().provider("simulator").price_micros_per_second("sora-2", "1280x720")
    assert per_second is not None
    with httpx.Client(
        base_url=stack.intake_url, timeout=10, headers=as_tenant(stack, "acme")
    ) as http:

        def post(body: dict[str, Any]) -> str:
            answer = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
            assert answer.status_code == 202, answer.text
            job_id: str = answer.json()["job_id"]
            return job_id

        source_id = post({"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a boat"})
        early = http.post(
            "/v1/jobs", json={"kind": "remix", "source_job_id": source_id, "prompt": "too soon"}
        )
        source = finished(http, source_id)
        assert source["status"] == "completed", source
        remix_id = post({"kind": "remix", "source_job_id": source_id, "prompt": "at night"})
        extend_id = post(
            {"kind": "extend", "source_job_id": source_id, "prompt": "it sails on", "seconds": 8}
        )
        remix, extension = finished(http, remix_id), finished(http, extend_id)
        theirs = http.post(
            "/v1/jobs",
            json={"kind": "remix", "source_job_id": source_id, "prompt": "not mine"},
            headers=as_tenant(stack, "globex"),
        )

    assert early.status_code == 409  # the source was not completed yet
    assert theirs.status_code == 404  # another tenant's job is no source
    assert (remix["status"], extension["status"]) == ("completed", "completed"), (remix, extension)
    assert (remix["spec"]["kind"], remix["spec"]["seconds"]) == ("remix", 4)
    assert (extension["spec"]["seconds"], extension["spec"]["total_seconds"]) == (8, 12)
    for record, seconds in ((source, 4), (remix, 4), (extension, 8)):
        assert record["cost_micros"] == seconds * per_second, record
        assert record["charged_micros"] == seconds * per_second, record
    creates = httpx.get(f"{stack.simulator_url}/control/creates", timeout=10).json()
    made = {c["client_request_id"]: c for c in creates}
    for job_id in (source_id, remix_id, extend_id):
        assert [c["client_request_id"] for c in creates].count(job_id) == 1, job_id
    upstream_source = source["upstream_id"]
    assert (made[source_id]["kind"], made[source_id]["source_video_id"]) == ("create", None)
    assert (made[remix_id]["kind"], made[remix_id]["source_video_id"]) == (
        "remix", upstream_source,
    )  # fmt: skip
    assert (made[extend_id]["kind"], made[extend_id]["source_video_id"]) == (
        "extension", upstream_source,
    )  # fmt: skip
    assert made[extend_id]["seconds"] == "12"  # the upstream's stitched total
    assert extension["produced_seconds"] == 12

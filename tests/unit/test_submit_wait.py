"""`clipline submit --wait`: events only wake it; the job's record (intake's HTTP API) decides
when it has ended and what is reported."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from clipline.cli import _follow, _report
from clipline.stack import StackState
from shared.contracts import AssetRef, JobRecordV1, JobSpec, JobStatus

JOB = "job_" + "b" * 32
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ASSET = AssetRef(
    variant="video", bucket="clipline-assets", key=f"acme/{JOB}/video.mp4", size_bytes=10,
    sha256="0" * 64, content_type="video/mp4",
)  # fmt: skip


def record(status: JobStatus, **changes: Any) -> JobRecordV1:
    spec = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p")
    fields: dict[str, Any] = {
        "job_id": JOB, "tenant": "acme", "status": status, "spec": spec, "idempotency_key": "k",
        "request_hash": "h", "cost_micros": 400_000, "history": {"accepted": T0},
    }  # fmt: skip
    return JobRecordV1.model_validate(fields | changes)


class Intake:
    """intake's GET /v1/jobs/{id}, answering whatever record the test holds now."""

    def __init__(self, current: JobRecordV1) -> None:
        self.current = current
        self.reads = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v1/jobs/{JOB}"
        self.reads += 1
        return httpx.Response(200, json=self.current.model_dump(mode="json"))


async def follow(intake: Intake, queued: list[tuple[str, dict[str, Any]]], limit: float) -> Any:
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for item in queued:
        events.put_nowait(item)
    transport = httpx.MockTransport(intake.handler)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        return await _follow(events, http, JOB, limit, {"status": "accepted"})


async def test_a_completed_event_the_record_does_not_bear_out_keeps_it_waiting() -> None:
    intake = Intake(record(JobStatus.SUBMITTED))
    forged = ("completed", {"assets": [], "timings": {"total_seconds": 12345.0}})

    assert await follow(intake, [forged], limit=0.3) is None  # timed out, never "completed"
    assert intake.reads >= 1  # the event woke it (then the quiet did); the record: not ended


async def test_the_record_that_ended_is_what_it_returns() -> None:
    done = record(
        JobStatus.COMPLETED, assets=[ASSET],
        history={"accepted": T0, "completed": T0 + timedelta(seconds=7)},
    )  # fmt: skip
    intake = Intake(done)

    assert await follow(intake, [("completed", {})], limit=5.0) == done


async def test_the_report_says_what_the_record_says(capsys: pytest.CaptureFixture[str]) -> None:
    done = record(
        JobStatus.COMPLETED, assets=[ASSET],
        history={"accepted": T0, "completed": T0 + timedelta(seconds=7)},
    )  # fmt: skip
    state = StackState.__new__(StackState)
    args = argparse.Namespace(verify=False)

    assert _report(done, state, args) == 0
    out = capsys.readouterr().out
    assert f"job {JOB} completed in 7.0s" in out
    assert ASSET.key in out
    assert "cost: $0.40 (400000 micro-dollars)" in out


def test_a_failed_record_is_reported_failed(capsys: pytest.CaptureFixture[str]) -> None:
    failed = record(JobStatus.FAILED, reason="upstream_failed", detail="no")
    state = StackState.__new__(StackState)

    assert _report(failed, state, argparse.Namespace(verify=False)) == 1
    assert "job failed: upstream_failed: no" in capsys.readouterr().out

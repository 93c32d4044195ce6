"""`clipline download` on the embedded stack: a completed job's video, saved and verified. The
stack deletes the upstream's copy after a store (CLIPLINE_DELETE_UPSTREAM_AFTER_STORE), so S3
holds the only one."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipline.stack import LOCAL_API_KEY, StackOptions, StackState
from tests.e2e.harness import as_tenant, clipline, running_stack

pytestmark = pytest.mark.e2e
DEADLINE = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=1.5,
        poll_after_ms=200,
        env={"CLIPLINE_DELETE_UPSTREAM_AFTER_STORE": "true"},
    )
    with running_stack(tmp_path_factory.mktemp("download"), options) as state:
        yield state


def ended(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job's record once it is terminal (polled with a deadline)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        record: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if record["status"] in ("completed", "failed", "rejected", "timed_out", "cancelled"):
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {DEADLINE}s")


def upstream_gone(stack: StackState, upstream_id: str, within: float = 10.0) -> bool:
    """Whether the simulator answers 404 for the video within `within` s (storage deletes it
    just after recording the job completed)."""
    url = f"{stack.simulator_url}/v1/videos/{upstream_id}"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        got = httpx.get(url, headers={"Authorization": f"Bearer {LOCAL_API_KEY}"}, timeout=10)
        if got.status_code == 404:
            return True
        assert got.status_code == 200, got.text
        time.sleep(0.1)
    return False


def submit(http: httpx.Client, prompt: str) -> str:
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": prompt}
    posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert posted.status_code == 202, posted.text
    job_id: str = posted.json()["job_id"]
    return job_id


def test_download_saves_the_completed_video_with_its_recorded_sha256(
    stack: StackState, tmp_path: Path
) -> None:
    tenant = f"dl{uuid.uuid4().hex[:6]}"
    with httpx.Client(
        base_url=stack.intake_url, timeout=10, headers=as_tenant(stack, tenant)
    ) as http:
        job_id = submit(http, "a paper boat to download")
        record = ended(http, job_id)
    assert record["status"] == "completed", record
    video = next(a for a in record["assets"] if a["variant"] == "video")
    assert upstream_gone(stack, record["upstream_id"])  # deleted upstream once stored

    out = clipline(stack.home, "download", job_id, "--tenant", tenant, "--variant", "video",
                   "-o", str(tmp_path / "out"))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    saved = tmp_path / "out" / f"{job_id}-video.mp4"
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temporary left
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == video["sha256"]
    assert saved.stat().st_size == video["size_bytes"]
    assert out.stdout.splitlines() == [
        f"{saved} ({video['size_bytes']} bytes, sha256 {video['sha256'][:16]}... verified)"
    ]

    every = clipline(stack.home, "download", job_id, "--tenant", tenant, "-o", str(tmp_path))
    assert every.returncode == 0, every.stdout + every.stderr
    assert len(every.stdout.splitlines()) == 3
    for variant, ext in (("thumbnail", "webp"), ("spritesheet", "jpg")):
        assert (tmp_path / f"{job_id}-{variant}.{ext}").stat().st_size > 0


def test_download_of_a_job_not_completed_says_so_and_exits_1(
    stack: StackState, tmp_path: Path
) -> None:
    tenant = f"dl{uuid.uuid4().hex[:6]}"
    with httpx.Client(
        base_url=stack.intake_url, timeout=10, headers=as_tenant(stack, tenant)
    ) as http:
        job_id = submit(http, "cancelled before it is stored")
        assert http.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
        assert ended(http, job_id)["status"] == "cancelled"
    out = clipline(stack.home, "download", job_id, "--tenant", tenant, "-o", str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"job {job_id} is cancelled, not completed" in out.stderr
    assert list(tmp_path.iterdir()) == []
    other = clipline(stack.home, "download", job_id, "--tenant", "someone", "-o", str(tmp_path))
    assert other.returncode == 1, other.stdout + other.stderr
    assert f"no job {job_id} for this API key" in other.stderr

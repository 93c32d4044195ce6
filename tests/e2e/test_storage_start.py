"""storage starts without S3: its bucket is made by the first store, once S3 is back."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from minio import Minio

from clipline.stack import BUCKET, StackOptions, StackState
from tests.e2e.harness import clipline, current, kill_hard, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=1.5, poll_after_ms=200, env={"CLIPLINE_SIM_SMALL_ASSETS": "true"}
    )
    with running_stack(tmp_path_factory.mktemp("storage-start"), options) as state:
        yield state


def s3(state: StackState) -> Minio:
    return Minio(state.s3_endpoint, access_key=state.s3_access_key,
                 secret_key=state.s3_secret_key, secure=False)  # fmt: skip


def test_storage_starts_while_s3_is_down_and_makes_its_bucket_on_the_first_store(
    stack: StackState,
) -> None:
    home = stack.home
    assert not s3(stack).bucket_exists(BUCKET)  # a fresh stack: nothing stored yet
    kill_hard(stack.find("s3").pid)
    restarted = clipline(home, "restart", "storage")  # waits until storage is healthy
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    back = clipline(home, "restart", "s3")
    assert back.returncode == 0, back.stdout + back.stderr
    state = current(home)

    tenant, key = f"st{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with httpx.Client(
        base_url=state.intake_url, timeout=10, headers={"X-Clipline-Tenant": tenant}
    ) as http:
        body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "first store"}
        posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["job_id"]
        deadline, record = time.monotonic() + 90, dict[str, Any]()
        while time.monotonic() < deadline:
            record = http.get(f"/v1/jobs/{job_id}").json()
            if record["status"] in ("completed", "failed", "cancelled", "timed_out"):
                break
            time.sleep(0.2)
    assert record["status"] == "completed", record
    video = next(a for a in record["assets"] if a["variant"] == "video")
    assert video["bucket"] == BUCKET
    obj = s3(state).get_object(BUCKET, video["key"])
    try:
        assert hashlib.sha256(obj.read()).hexdigest() == video["sha256"]
    finally:
        obj.close()
        obj.release_conn()

"""storage starts without S3: its bucket is made by the first store, once S3 is back; a
`generated` event delivered again stores nothing twice and completes the job once."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest
from minio import Minio

from clipline.stack import BUCKET, StackOptions, StackState
from shared.contracts import JobCompletedV1, JobGeneratedV1
from shared.streams import JOBS_STREAM_NAME
from tests.e2e.harness import as_tenant, clipline, current, kill_hard, running_stack

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


def run_job(state: StackState, tenant: str, prompt: str) -> dict[str, Any]:
    """Submit a job over HTTP and poll its record until it ended (90 s at most)."""
    with httpx.Client(
        base_url=state.intake_url, timeout=10, headers=as_tenant(state, tenant)
    ) as http:
        body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": prompt}
        posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["job_id"]
        deadline, record = time.monotonic() + 90, dict[str, Any]()
        while time.monotonic() < deadline:
            record = http.get(f"/v1/jobs/{job_id}").json()
            if record["status"] in ("completed", "failed", "cancelled", "timed_out"):
                break
            time.sleep(0.2)  # polling the record's status, with a deadline
    return record


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

    record = run_job(state, f"st{uuid.uuid4().hex[:6]}", "first store")
    assert record["status"] == "completed", record
    video = next(a for a in record["assets"] if a["variant"] == "video")
    assert video["bucket"] == BUCKET
    obj = s3(state).get_object(BUCKET, video["key"])
    try:
        assert hashlib.sha256(obj.read()).hexdigest() == video["sha256"]
    finally:
        obj.close()
        obj.release_conn()


async def replay_generated(state: StackState, tenant: str, job_id: str) -> int:
    """Publish the job's `generated` event again (as a redelivery or a replica's second copy
    would bring it; a new message id, so JetStream keeps it), wait until storage has acked it,
    and return how many `completed` messages the stream holds for the job."""
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        js = nc.jetstream()
        generated = JobGeneratedV1.subject_filter(tenant, job_id)
        original = await js.get_last_msg(JOBS_STREAM_NAME, generated)
        assert original.subject is not None
        ack = await js.publish(original.subject, original.data or b"",
                               headers={"Nats-Msg-Id": f"replay-{uuid.uuid4().hex}"})  # fmt: skip
        durable = JobGeneratedV1.durable("storage")
        deadline = time.monotonic() + 30
        while True:  # storage has handled the replay once its ack floor passes it
            info = await js.consumer_info(JOBS_STREAM_NAME, durable)
            if info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= ack.seq:
                break
            assert time.monotonic() < deadline, f"storage did not ack the replay: {info}"
            await asyncio.sleep(0.1)
        completed = JobCompletedV1.subject_filter(tenant, job_id)
        stream = await js.stream_info(JOBS_STREAM_NAME, subjects_filter=completed)
        return sum((stream.state.subjects or {}).values())
    finally:
        await nc.close()


def test_a_redelivered_generated_event_stores_nothing_twice_and_completes_once(
    stack: StackState,
) -> None:
    state = current(stack.home)
    tenant = f"rp{uuid.uuid4().hex[:6]}"
    record = run_job(state, tenant, "stored once")
    assert record["status"] == "completed", record
    job_id = record["job_id"]
    client = s3(state)
    before = {a["key"]: client.stat_object(BUCKET, a["key"]) for a in record["assets"]}

    completions = asyncio.run(replay_generated(state, tenant, job_id))

    assert completions == 1  # the re-emitted completion had the same event id: dropped
    for object_key, first in before.items():  # the same objects, not written again
        again = client.stat_object(BUCKET, object_key)
        assert (again.etag, again.last_modified, again.size) == (
            first.etag, first.last_modified, first.size,
        )  # fmt: skip

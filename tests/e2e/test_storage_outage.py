"""S3 down for 30 s while a job is to be stored: it waits, spends no error budget, and is
stored once `clipline restart s3` brings S3 back."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.msg import Msg

from clipline.stack import StackOptions, StackState
from shared.contracts.ids import job_id_for
from tests.e2e.harness import as_tenant, clipline, current, kill_hard, running_stack

pytestmark = pytest.mark.e2e
OUTAGE = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=1.5, poll_after_ms=200, env={"CLIPLINE_SIM_SMALL_ASSETS": "true"}
    )
    with running_stack(tmp_path_factory.mktemp("storage-outage"), options) as state:
        yield state


async def test_storage_waits_for_s3_and_stores_when_it_returns(stack: StackState) -> None:
    home = stack.home
    tenant, key = f"out{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    job_id = job_id_for(tenant, key)
    events: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        events.put_nowait((msg.subject.split(".")[2], msg.data))

    async def next_of(kinds: set[str], within: float) -> tuple[str, bytes]:
        deadline = time.monotonic() + within
        while True:
            kind, data = await asyncio.wait_for(events.get(), max(0.1, deadline - time.monotonic()))
            if kind in kinds:
                return kind, data

    headers = as_tenant(stack, tenant)
    http = httpx.Client(base_url=stack.intake_url, timeout=10, headers=headers)
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.{job_id}", cb=on_event)
        kill_hard(stack.find("s3").pid)  # S3 is down
        down_since = time.monotonic()
        body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "wait for S3"}
        posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert posted.status_code == 202, posted.text
        assert (await next_of({"generated", "failed"}, 60))[0] == "generated"
        while time.monotonic() - down_since < OUTAGE:  # the outage lasts; the job waits
            record = http.get(f"/v1/jobs/{job_id}").json()
            assert record["status"] in ("generated", "storing"), record
            assert "storage" not in record["errors"], record  # waiting is not an error
            assert events.empty()  # nothing ended
            await asyncio.sleep(0.5)
        assert record["status"] == "storing"
        out = clipline(home, "restart", "s3")
        assert out.returncode == 0, out.stdout + out.stderr
        back = time.monotonic()
        kind, data = await next_of({"completed", "failed", "timed_out"}, 60)
        took = time.monotonic() - back
    finally:
        await nc.close()
        http.close()
    assert kind == "completed", data
    record = httpx.get(f"{stack.intake_url}/v1/jobs/{job_id}", headers=headers).json()
    assert "storage" not in record["errors"]
    state = current(home)
    s3 = Minio(
        state.s3_endpoint, access_key=state.s3_access_key, secret_key=state.s3_secret_key,
        secure=False,
    )  # fmt: skip
    for asset in record["assets"]:
        obj = s3.get_object(asset["bucket"], asset["key"])
        try:
            assert hashlib.sha256(obj.read()).hexdigest() == asset["sha256"]
        finally:
            obj.close()
            obj.release_conn()
    print(f"\n[storage] S3 down {OUTAGE:.0f}s: stored {took:.1f}s after `clipline restart s3`")

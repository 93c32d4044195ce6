"""kill -9 of storage mid-upload, then `clipline restart storage`: the job completes once, and the
stored video's sha256 is the upstream's.

The simulator serves a 256 MiB video (large-asset mode, CLIPLINE_SIM_VIDEO_BYTES), so its store
takes a second or two. Storage is killed once it has sent VIDEO_SENT bytes to S3 (its TCP
sockets' `bytes_acked`, read with `ss`: an observable point in the upload, not a sleep), and the
video must not be in S3 yet at that moment. The restarted storage is handed the job again
(JetStream redelivers what the dead one held) and stores it from the start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.msg import Msg

from clipline.servers import pid_alive
from clipline.stack import LOCAL_API_KEY, StackOptions, StackState
from shared.contracts.ids import job_id_for
from shared.streams import JOBS_STREAM_NAME
from tests.e2e.harness import as_tenant, current, running_stack

pytestmark = pytest.mark.e2e
VIDEO_BYTES = 256 * 1024 * 1024
VIDEO_SENT = 32 * 1024 * 1024  # sent to S3 by storage when it is killed: 6 parts, an eighth
CHUNK = 1024 * 1024
_PID = re.compile(r"pid=(\d+),")
_ACKED = re.compile(r"\bbytes_acked:(\d+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    env = {"CLIPLINE_SIM_SMALL_ASSETS": "true", "CLIPLINE_SIM_VIDEO_BYTES": str(VIDEO_BYTES)}
    options = StackOptions(generation_seconds=1.0, queue_seconds=0.0, poll_after_ms=200, env=env)
    with running_stack(tmp_path_factory.mktemp("storage-kill"), options) as state:
        yield state


def sent_to(pid: int, endpoint: str) -> int:
    """Bytes process `pid` has sent (and had acknowledged) on its open TCP connections to
    `endpoint` ("host:port"), from the kernel's tcp_info as `ss` shows it."""
    out = subprocess.run(
        ["ss", "-tinpH", "state", "established", "dst", endpoint],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    total, ours = 0, False
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):  # a socket's line; its tcp_info is the next one
            ours = str(pid) in _PID.findall(line)
        elif ours and (acked := _ACKED.search(line)):
            total += int(acked.group(1))
    return total


def s3_client(state: StackState) -> Minio:
    return Minio(
        state.s3_endpoint, access_key=state.s3_access_key, secret_key=state.s3_secret_key,
        secure=False,
    )  # fmt: skip


def s3_sha256(state: StackState, bucket: str, key: str) -> str:
    obj = s3_client(state).get_object(bucket, key)
    digest = hashlib.sha256()
    try:
        for chunk in obj.stream(CHUNK):
            digest.update(chunk)
    finally:
        obj.close()
        obj.release_conn()
    return digest.hexdigest()


def upstream_sha256(state: StackState, upstream_id: str) -> tuple[str, int]:
    """The video as the upstream serves it, streamed and hashed: (sha256, bytes)."""
    digest, size = hashlib.sha256(), 0
    url = f"{state.simulator_url}/v1/videos/{upstream_id}/content"
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def restart(home: str, name: str) -> None:
    """`clipline restart`, run without blocking the loop that receives events meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clipline.cli", "--home", home, "restart", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()


async def test_storage_killed_mid_upload_stores_the_upstreams_bytes(stack: StackState) -> None:
    home = stack.home
    tenant, key = f"kill{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    job_id = job_id_for(tenant, key)
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    completions = 0

    async def on_event(msg: Msg) -> None:
        nonlocal completions
        kind = msg.subject.split(".")[2]
        completions += kind == "completed"
        events.put_nowait((kind, json.loads(msg.data)))

    async def next_of(kinds: set[str], within: float) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + within
        while True:
            kind, data = await asyncio.wait_for(events.get(), max(0.1, deadline - time.monotonic()))
            if kind in kinds:
                return kind, data

    headers = as_tenant(stack, tenant)
    victim = current(home).find("storage").pid
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.{job_id}", cb=on_event)
        started = time.monotonic()
        body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "kill the store"}
        async with httpx.AsyncClient(base_url=stack.intake_url, headers=headers) as http:
            posted = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
        assert posted.status_code == 202, posted.text
        kind, generated = await next_of({"generated", "failed", "rejected"}, 60)
        assert kind == "generated", generated
        generated_at = time.monotonic()
        deadline = generated_at + 30
        while (sent := sent_to(victim, stack.s3_endpoint)) < VIDEO_SENT:
            assert events.empty(), f"the job moved on before the kill: {events.get_nowait()}"
            assert time.monotonic() < deadline, f"storage sent only {sent} bytes to S3 in 30 s"
            await asyncio.sleep(0.02)  # polling the condition, not a fixed wait
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        while pid_alive(victim):  # a zombie counts as gone
            assert time.monotonic() < killed_at + 10, "storage survived SIGKILL"
            await asyncio.sleep(0.02)
        stored = [o.object_name for o in s3_client(stack).list_objects(
            stack.bucket, prefix=f"{tenant}/", recursive=True)]  # fmt: skip
        assert not any(str(name).endswith("/video.mp4") for name in stored), stored
        await restart(home, "storage")
        healthy_at = time.monotonic()
        kind, done = await next_of({"completed", "failed", "cancelled", "timed_out"}, 60)
        completed_at = time.monotonic()
        jsm = nc.jetstream()
        subject = f"clipline.job.completed.v1.{tenant}.{job_id}"
        info = await jsm.stream_info(JOBS_STREAM_NAME, subjects_filter=subject)
    finally:
        await nc.close()
    assert kind == "completed", done
    assert (info.state.subjects or {}) == {subject: 1}, info.state.subjects  # one in the stream
    assert current(home).find("storage").pid != victim
    video = next(a for a in done["assets"] if a["variant"] == "video")
    assert video["size_bytes"] == VIDEO_BYTES, video
    hashed = time.monotonic()
    upstream, upstream_size = upstream_sha256(stack, generated["upstream_id"])
    in_s3 = s3_sha256(stack, video["bucket"], video["key"])
    assert upstream_size == VIDEO_BYTES
    assert video["sha256"] == upstream, (video["sha256"], upstream)
    assert in_s3 == upstream, (in_s3, upstream)
    print(
        f"\n[storage kill] {VIDEO_BYTES >> 20} MiB video: generated {generated_at - started:.1f}s"
        f" after submit; killed {killed_at - generated_at:.2f}s into the store, at"
        f" {sent / 2**20:.0f} MiB sent to S3; restart took {healthy_at - killed_at:.1f}s;"
        f" completed {completed_at - healthy_at:.1f}s after healthy; sha256 of upstream and S3"
        f" read back in {time.monotonic() - hashed:.1f}s; completed events seen {completions}"
        f" (in the stream: 1); whole test {time.monotonic() - started:.1f}s after submit"
    )

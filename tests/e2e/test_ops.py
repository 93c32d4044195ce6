"""Operating the embedded stack: `up` after a crash, `restart`, `logs`, and what is recorded."""

from __future__ import annotations

import asyncio
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.msg import Msg

from clipline.stack import SERVICES, StackOptions, StackState
from shared.contracts.ids import job_id_for
from tests.e2e.harness import (
    all_healthy,
    as_tenant,
    clipline,
    current,
    kill_hard,
    pids,
    ports,
    running_stack,
    wait_for,
)
from tests.e2e.test_stack import follow

pytestmark = pytest.mark.e2e
HEALTHY_WITHIN = 30.0


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    home = tmp_path_factory.mktemp("ops")
    with running_stack(home, StackOptions(generation_seconds=1.5, poll_after_ms=200)) as state:
        yield state


async def completed_job(state: StackState, prompt: str) -> dict[str, Any]:
    """Submit a job over intake's HTTP API and return its terminal event, which must be
    `completed`."""
    tenant, key = f"ops{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": prompt}
    headers = {**as_tenant(state, tenant), "Idempotency-Key": key}
    with httpx.Client(base_url=state.intake_url, timeout=10) as http:
        created, event = await follow(
            state, tenant, key, lambda: http.post("/v1/jobs", json=body, headers=headers)
        )
    assert created.status_code == 202, created.text
    assert event["kind"] == "completed", event
    return event


def others(mapping: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k not in names}


def test_every_python_process_logs_to_its_capped_file(ops: StackState) -> None:
    for proc in ops.processes:
        if proc.name in ("nats", "seaweedfs"):
            continue
        assert proc.env["CLIPLINE_LOG_FILE"] == proc.log
        assert Path(proc.log).name == f"{proc.name}.log"
        assert int(proc.env["CLIPLINE_LOG_MAX_BYTES"]) == 10 * 1024 * 1024
        assert Path(proc.output).name == f"{proc.name}.stderr"
    simulator = ops.find("simulator")
    assert simulator.env["CLIPLINE_SIM_STATE_DIR"] == str(Path(ops.home) / "sim-state")
    assert Path(ops.find("nats").log).name == "nats.log"
    assert ops.find("s3") is ops.find("seaweedfs")


def test_up_starts_only_what_died(ops: StackState) -> None:
    home = ops.home
    before, ports_before = pids(home), ports(home)
    kill_hard(before["poller"])
    out = clipline(home, "up")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started again: poller; the rest kept running" in out.stdout
    after = pids(home)
    assert after["poller"] != before["poller"]
    assert others(after, "poller") == others(before, "poller")  # the simulator's too
    assert ports(home) == ports_before
    assert all_healthy(home)


async def test_restart_one_service(ops: StackState) -> None:
    home = ops.home
    before, ports_before = pids(home), ports(home)
    out = clipline(home, "restart", "submitter")
    assert out.returncode == 0, out.stdout + out.stderr
    after = pids(home)
    assert after["submitter"] != before["submitter"]
    assert others(after, "submitter") == others(before, "submitter")
    assert ports(home) == ports_before
    await completed_job(current(home), "after the submitter restarted")


async def test_restart_nats_s3_and_simulator_keep_ports_and_data(ops: StackState) -> None:
    home = ops.home
    earlier = await completed_job(current(home), "before the servers restart")
    for name in ("nats", "s3", "simulator"):
        before, ports_before = pids(home), ports(home)
        out = clipline(home, "restart", name)
        assert out.returncode == 0, out.stdout + out.stderr
        recorded = "seaweedfs" if name == "s3" else name
        after = pids(home)
        assert after[recorded] != before[recorded]
        assert others(after, recorded) == others(before, recorded)
        assert ports(home) == ports_before
    # The services reconnect to nats by themselves.
    wait_for(lambda: all_healthy(home), "every process healthy", HEALTHY_WITHIN)
    state = current(home)
    with httpx.Client(base_url=state.intake_url, timeout=10) as http:
        # JetStream KV kept its data
        record = http.get(
            f"/v1/jobs/{earlier['job_id']}", headers=as_tenant(state, earlier["tenant"])
        )
    assert record.status_code == 200
    assert record.json()["status"] == "completed"
    video = next(a for a in earlier["assets"] if a["variant"] == "video")
    s3 = Minio(
        state.s3_endpoint, access_key=state.s3_access_key, secret_key=state.s3_secret_key,
        secure=False,
    )  # fmt: skip
    assert s3.stat_object(video["bucket"], video["key"]).size == video["size_bytes"]
    await completed_job(state, "after nats, S3 and the simulator restarted")


def test_logs_prints_the_last_lines(ops: StackState) -> None:
    out = clipline(ops.home, "logs", "nats", "-n", "5")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 5, out.stdout
    assert all("[INF]" in line or "[WRN]" in line for line in out.stdout.splitlines())
    for name in SERVICES:
        out = clipline(ops.home, "logs", name, "-n", "5")
        assert out.returncode == 0, out.stderr
        sections = out.stdout.split("==> ")
        assert out.stdout.strip(), f"{name}: nothing logged"
        for section in sections:
            lines = [line for line in section.splitlines() if not line.endswith(" <==")]
            assert len(lines) <= 5, out.stdout


def test_logs_of_an_unknown_process_names_the_known_ones(ops: StackState) -> None:
    out = clipline(ops.home, "logs", "nope")
    assert out.returncode == 2
    assert out.stdout == ""
    [line] = out.stderr.splitlines()
    assert "'nope'" in line
    assert all(name in line for name in ("nats", "seaweedfs", "simulator", *SERVICES)), line


def test_logs_follow_shows_a_restart_and_stops_on_ctrl_c(ops: StackState) -> None:
    argv = [sys.executable, "-m", "clipline.cli", "--home", ops.home, "logs", "intake", "-f"]
    # Ctrl-C as at a terminal: the command gets SIGINT's default disposition even when this
    # test run was started with SIGINT ignored (a background job of a non-interactive shell
    # ignores it, and a child inherits an ignored signal).
    follower = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for(lambda: not lines.empty(), "the last lines", HEALTHY_WITHIN)
        while not lines.empty():
            lines.get()
        restarted = clipline(ops.home, "restart", "intake")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        # The new intake process writes its start-up lines; the follower prints them.
        wait_for(lambda: not lines.empty(), "lines of the restarted intake", HEALTHY_WITHIN)
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=10)
    assert code == 0, follower.stderr.read() if follower.stderr else ""


def test_status_after_ops_is_healthy(ops: StackState) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN
    while (out := clipline(ops.home, "status")).returncode != 0:
        assert time.monotonic() < deadline, out.stdout
    assert out.stdout.count(" up ") == 8, out.stdout


async def test_a_job_in_generation_survives_the_simulator_killed_and_restarted(
    ops: StackState,
) -> None:
    """The simulator keeps its jobs in its state folder, as a real upstream would: a job it
    was generating when it was killed completes after `clipline restart simulator`, created
    upstream once."""
    home = ops.home
    state = current(home)
    tenant, key = f"sim{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    job_id = job_id_for(tenant, key)
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        seen.put_nowait(msg.subject.split(".")[2])

    async def next_of(kinds: set[str], within: float) -> str:
        deadline = time.monotonic() + within
        while True:
            kind = await asyncio.wait_for(seen.get(), max(0.1, deadline - time.monotonic()))
            if kind in kinds:
                return kind

    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.{job_id}", cb=on_event)
        body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "survive me"}
        headers = {**as_tenant(state, tenant), "Idempotency-Key": key}
        with httpx.Client(base_url=state.intake_url, timeout=10) as http:
            assert http.post("/v1/jobs", json=body, headers=headers).status_code == 202
        assert await next_of({"submitted"}, 30) == "submitted"
        kill_hard(state.find("simulator").pid)  # the upstream dies mid-generation
        out = clipline(home, "restart", "simulator")
        assert out.returncode == 0, out.stdout + out.stderr
        ending = await next_of({"completed", "failed", "timed_out"}, 90)
    finally:
        await nc.close()
    assert ending == "completed"
    creates = httpx.get(f"{current(home).simulator_url}/control/creates", timeout=10).json()
    assert [c["client_request_id"] for c in creates].count(job_id) == 1

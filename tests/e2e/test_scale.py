"""Replicas on the embedded stack (`clipline scale`), and its admin token: one stack, in order."""

from __future__ import annotations

import asyncio
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from clipline import admin_token
from clipline.servers import pid_alive
from clipline.stack import StackOptions, StackState, admin_endpoint, health_check
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
from tests.e2e.test_ops import HEALTHY_WITHIN, completed_job

pytestmark = pytest.mark.e2e
GONE_WITHIN = 15.0  # scale's own deadline: SIGTERM, then SIGKILL after 10 s
MAX_JOBS_TO_SEE_BOTH = 20


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    home = tmp_path_factory.mktemp("scale")
    with running_stack(home, StackOptions(generation_seconds=1.0, poll_after_ms=200)) as state:
        yield state


def environ_of(pid: int) -> dict[str, str]:
    """What a process of ours was given (same user: /proc/<pid>/environ is readable)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def token_of(state: StackState) -> str:
    token = admin_token.read(Path(state.home))
    assert token is not None
    return token


async def admitted_job(state: StackState, prompt: str) -> str:
    """Submit a job and wait until it is admitted (not until it ends); its id."""
    tenant, key = f"sc{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    job_id = job_id_for(tenant, key)
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    admitted: asyncio.Queue[Msg] = asyncio.Queue()
    try:
        await nc.subscribe(f"clipline.job.admitted.v1.{tenant}.{job_id}", cb=admitted.put)
        body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": prompt}
        headers = {**as_tenant(state, tenant), "Idempotency-Key": key}
        async with httpx.AsyncClient(base_url=state.intake_url, timeout=10) as http:
            assert (await http.post("/v1/jobs", json=body, headers=headers)).status_code == 202
        await asyncio.wait_for(admitted.get(), HEALTHY_WITHIN)
    finally:
        await nc.close()
    return job_id


def admitted_in(log: str, job_ids: list[str]) -> set[str]:
    text = Path(log).read_text(errors="replace")
    return {j for j in job_ids if f"job {j} admitted" in text}


def test_the_admin_token_is_kept_private_and_given_to_every_service(scaled: StackState) -> None:
    home = Path(scaled.home)
    token = token_of(scaled)
    assert stat.S_IMODE(admin_token.path(home).stat().st_mode) == 0o600
    for proc in scaled.processes:
        given = environ_of(proc.pid).get(admin_token.ENV)
        is_service = proc.name in ("intake", "pricing_guard", "submitter", "poller", "storage")
        assert given == (token if is_service else None), proc.name
        assert admin_token.ENV not in proc.env  # never recorded
    assert token not in (home / "stack.json").read_text()
    status = clipline(home, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert token not in status.stdout + status.stderr
    assert admin_endpoint(home) == (f"http://127.0.0.1:{ports(home)['pricing_guard']}", token)


async def test_scale_up_runs_a_second_replica_that_shares_the_work(scaled: StackState) -> None:
    home = scaled.home
    before = pids(home)
    out = clipline(home, "scale", "pricing_guard", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    state = current(home)
    second = state.find("pricing_guard-2")
    assert out.stdout == (
        f"pricing_guard: 2 replicas (started pricing_guard-2 on 127.0.0.1:{second.port})\n"
    )
    assert {k: v for k, v in pids(home).items() if k != "pricing_guard-2"} == before
    first = state.find("pricing_guard")
    assert state.running(second)
    assert health_check(second)()
    assert second.port not in set(ports(home).values()) - {second.port}
    assert (Path(second.log).name, Path(second.output).name) == (
        "pricing_guard-2.log",
        "pricing_guard-2.stderr",
    )
    assert second.env["CLIPLINE_HTTP_PORT"] == str(second.port) != str(first.port)
    assert environ_of(second.pid)[admin_token.ENV] == token_of(state)
    status = clipline(home, "status")
    assert status.returncode == 0, status.stdout
    assert re.search(rf"^pricing_guard-2 +pid {second.pid} +up +127\.0\.0\.1:{second.port}$",
                     status.stdout, re.M), status.stdout  # fmt: skip
    # Both consume the same durable consumer: each admits some of a few jobs, none both.
    jobs: list[str] = []

    def logged() -> bool:  # each line is written just after its event
        return admitted_in(first.log, jobs) | admitted_in(second.log, jobs) == set(jobs)

    while not (admitted_in(first.log, jobs) and admitted_in(second.log, jobs)):
        assert len(jobs) < MAX_JOBS_TO_SEE_BOTH, f"one replica admitted all {len(jobs)} jobs"
        jobs.append(await admitted_job(state, f"spread {len(jobs)}"))
        wait_for(logged, "the admitted line in a replica's log", 10)
    assert not admitted_in(first.log, jobs) & admitted_in(second.log, jobs)
    print(f"both pricing_guard replicas admitted jobs after {len(jobs)} jobs")
    await completed_job(state, "with two pricing_guard replicas")


async def test_a_killed_replica_leaves_the_other_and_up_brings_it_back(
    scaled: StackState,
) -> None:
    home = scaled.home
    state = current(home)
    first, second = state.find("pricing_guard"), state.find("pricing_guard-2")
    kill_hard(first.pid)
    # The admin API is reached on the replica still healthy.
    assert admin_endpoint(Path(home)) == (f"http://127.0.0.1:{second.port}", token_of(state))
    await completed_job(state, "with the first pricing_guard killed")
    out = clipline(home, "up")  # starts what is dead, and keeps the scaled count
    assert out.returncode == 0, out.stdout + out.stderr
    assert "started again: pricing_guard; the rest kept running" in out.stdout
    again = current(home)
    assert [p.name for p in again.processes if p.name.startswith("pricing_guard")] == [
        "pricing_guard",
        "pricing_guard-2",
    ]
    assert again.find("pricing_guard-2").pid == second.pid
    assert environ_of(again.find("pricing_guard").pid)[admin_token.ENV] == token_of(state)
    assert admin_endpoint(Path(home))[0] == f"http://127.0.0.1:{first.port}"


def test_restart_and_logs_of_a_replica(scaled: StackState) -> None:
    home = scaled.home
    token = token_of(scaled)
    before, ports_before = pids(home), ports(home)
    out = clipline(home, "restart", "pricing_guard-2")
    assert out.returncode == 0, out.stdout + out.stderr
    after = pids(home)
    assert after["pricing_guard-2"] != before["pricing_guard-2"]
    assert {k: v for k, v in after.items() if k != "pricing_guard-2"} == {
        k: v for k, v in before.items() if k != "pricing_guard-2"
    }
    assert ports(home) == ports_before
    assert token_of(current(home)) == token  # the same token after a restart...
    assert environ_of(after["pricing_guard-2"])[admin_token.ENV] == token  # ...and given
    logs = clipline(home, "logs", "pricing_guard-2", "-n", "5")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.strip(), "pricing_guard-2 logged nothing"


def test_scale_down_stops_the_highest_replica(scaled: StackState) -> None:
    home = scaled.home
    second = current(home).find("pricing_guard-2")
    out = clipline(home, "scale", "pricing_guard", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == f"pricing_guard: 1 replica (stopped pricing_guard-2 (pid {second.pid}))\n"
    wait_for(lambda: not pid_alive(second.pid), "pricing_guard-2 to be gone", GONE_WITHIN)
    state = current(home)
    assert "pricing_guard-2" not in pids(home)
    assert all_healthy(home)
    again = clipline(home, "scale", "pricing_guard", "1")
    assert again.stdout == "pricing_guard: 1 replica (unchanged)\n"
    logs = clipline(home, "logs", "pricing_guard-2", "-n", "3")  # still on disk
    assert logs.returncode == 0, logs.stderr
    assert len(logs.stdout.splitlines()) == 3, logs.stdout
    refused = clipline(home, "scale", "simulator", "2")
    assert refused.returncode == 3  # a usage error
    assert "simulator is not scalable" in refused.stderr
    assert len(state.processes) == 8


def test_the_admin_token_is_in_no_log(scaled: StackState) -> None:
    token = token_of(scaled)
    logs = [p for p in (Path(scaled.home) / "logs").rglob("*") if p.is_file()]
    assert any(p.name == "pricing_guard-2.log" for p in logs)  # a stopped replica's log stays
    for path in logs:
        assert token.encode() not in path.read_bytes(), path

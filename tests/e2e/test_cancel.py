"""Cancel on the embedded stack, as a user drives it with `clipline cancel`:

- before submission (the submitter down, so the job waits `admitted`): it ends `cancelled` once
  the submitter is back, with no upstream create and its reservation released;
- after submission (a 20 s generation): it ends `cancelled` at once with the upstream id, the
  estimate charged as the sunk cost, the poller holding no timer for it, and nothing stored
  when the upstream video finishes (its webhook finds the job not followed)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.msg import Msg

from clipline.stack import StackOptions, StackState
from shared.contracts import JobSubmittedV1
from tests.e2e.harness import as_tenant, clipline, current, kill_hard, running_stack

pytestmark = pytest.mark.e2e
COST = 400_000  # sora-2, 4 s at $0.10 a second
GENERATION_SECONDS = 20.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=GENERATION_SECONDS,
        poll_after_ms=300,
        # With webhooks on, polls are the safety net this far apart: short, so the poller's
        # timer of a cancelled job comes round (and is dropped) within the test.
        env={"CLIPLINE_POLL_WEBHOOK_SAFETY_SECONDS": "2", "CLIPLINE_SIM_SMALL_ASSETS": "true"},
    )
    with running_stack(tmp_path_factory.mktemp("cancel"), options) as state:
        yield state


@dataclass
class Watch:
    """Every event of one tenant, in arrival order; waiters for a kind of one job."""

    seen: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on_event(self, msg: Msg) -> None:
        kind, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
        async with self.arrived:
            self.seen.append((kind, job_id, json.loads(msg.data)))
            self.arrived.notify_all()

    def kinds(self, job_id: str) -> list[str]:
        """The kinds of one job's events, each once (a core subscription also sees the
        repeats of a fact that JetStream dropped), in the order they first came."""
        return list(dict.fromkeys(kind for kind, job, _ in self.seen if job == job_id))

    async def first(self, kind: str, job_id: str, within: float) -> dict[str, Any]:
        def found() -> bool:
            return kind in self.kinds(job_id)

        async with self.arrived:
            try:
                await asyncio.wait_for(self.arrived.wait_for(found), within)
            except TimeoutError:
                pytest.fail(f"no {kind} event of {job_id} within {within:.0f}s: "
                            f"{self.kinds(job_id)}")  # fmt: skip
        return next(data for k, job, data in self.seen if (k, job) == (kind, job_id))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    """Look again (every 0.2 s) until `check` holds; fail after `within` s."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within:.0f}s waiting for {what}"
        await asyncio.sleep(0.2)  # the interval between looks, not a synchronisation


async def cli(state: StackState, *args: str) -> tuple[int, str]:
    done = await asyncio.to_thread(clipline, state.home, *args)
    return done.returncode, done.stdout + done.stderr


async def spend(state: StackState, tenant: str) -> dict[str, Any]:
    code, out = await cli(state, "spend", "--tenant", tenant, "--json")
    assert code == 0, out
    return dict(json.loads(out))


async def submit(state: StackState, tenant: str, prompt: str) -> str:
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": prompt}
    async with httpx.AsyncClient(base_url=state.intake_url, timeout=30) as http:
        answer = await http.post("/v1/jobs", json=body, headers=as_tenant(state, tenant))
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


async def job(state: StackState, tenant: str, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=state.intake_url, timeout=30) as http:
        answer = await http.get(f"/v1/jobs/{job_id}", headers=as_tenant(state, tenant))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def creates_of(state: StackState, job_id: str) -> list[Any]:
    params = {"client_request_id": job_id}
    return list(httpx.get(f"{state.simulator_url}/control/creates", params=params).json())


async def watching(state: StackState, tenant: str) -> tuple[Any, Watch]:
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    watch = Watch()
    await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=watch.on_event)
    await nc.flush()
    return nc, watch


async def test_cancel_before_submission_releases_the_reservation_and_creates_nothing(
    stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"cxl{uuid.uuid4().hex[:8]}"
    kill_hard(current(stack.home).find("submitter").pid)  # the job cannot get upstream
    nc, watch = await watching(stack, tenant)
    try:
        job_id = await submit(stack, tenant, "a kite over the dunes")
        await watch.first("admitted", job_id, 60)
        assert (await spend(stack, tenant))["lifetime"]["reserved"]["micros"] == COST

        code, out = await cli(stack, "cancel", job_id, "--tenant", tenant)
        assert code == 0, out
        assert f"job {job_id} is cancelling" in out
        assert (await job(stack, tenant, job_id))["status"] == "cancelling"
        code, out = await cli(stack, "cancel", job_id, "--tenant", tenant)  # a repeat is fine
        assert code == 0, out
        assert "already cancelling" in out

        began = time.monotonic()
        code, out = await cli(stack, "restart", "submitter")
        assert code == 0, out
        ended = await watch.first("cancelled", job_id, 60)
        took = time.monotonic() - began
    finally:
        await nc.close()
    assert (ended["reason"], ended["stage"], ended["upstream_id"]) == (
        "cancelled", "submitter", None,
    )  # fmt: skip
    assert "nothing was created upstream" in ended["detail"]
    assert watch.kinds(job_id) == ["accepted", "admitted", "cancel_requested", "cancelled"]

    async def released() -> bool:
        ledger = await spend(stack, tenant)
        return bool(ledger["rows"]) and ledger["rows"][0]["released_jobs"] == 1

    await eventually(released, "the reservation to be released", 30)
    ledger = await spend(stack, tenant)
    assert (ledger["total"]["micros"], ledger["lifetime"]["reserved"]["micros"]) == (0, 0)
    assert ledger["lifetime"]["disputed"]["micros"] == 0
    record = await job(stack, tenant, job_id)
    assert (record["status"], record["charged_micros"], record["upstream_id"]) == (
        "cancelled", 0, None,
    )  # fmt: skip
    assert creates_of(stack, job_id) == []  # the upstream never saw it
    code, out = await cli(stack, "cancel", job_id, "--tenant", tenant)
    assert (code, f"job {job_id} is cancelled" in out) == (0, True), out
    with capsys.disabled():
        print(f"\n[cancel] before submission: cancelled {took:.1f}s after the submitter's "
              "restart (incl. the restart), released, no upstream create")  # fmt: skip


async def poller_is_idle(state: StackState) -> bool:
    """The poller holds no message: no job's timer is pending with it."""
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        info = await nc.jetstream().consumer_info("CLIPLINE_JOBS", JobSubmittedV1.durable("poller"))
    finally:
        await nc.close()
    return bool(info.num_ack_pending == 0 and info.num_pending == 0)


async def test_cancel_after_submission_stops_following_stores_nothing_and_charges_the_sunk_cost(
    stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"cxl{uuid.uuid4().hex[:8]}"
    nc, watch = await watching(stack, tenant)
    try:
        job_id = await submit(stack, tenant, "a lighthouse in a storm")
        submitted = await watch.first("submitted", job_id, 60)
        upstream_id = submitted["upstream_id"]
        asked = time.monotonic()
        code, out = await cli(stack, "cancel", job_id, "--tenant", tenant)
        assert code == 0, out
        ended = await watch.first("cancelled", job_id, 30)
        took = time.monotonic() - asked
        await eventually(lambda: poller_is_idle(stack), "the poller to drop the job", 30)

        async def webhook_answered() -> bool:
            async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=10) as sim:
                log = (await sim.get("/control/webhooks")).json()
            return any(
                d["video_id"] == upstream_id and d["type"] == "video.completed"
                and d["state"] == "delivered"
                for d in log
            )  # fmt: skip

        # The upstream job runs on to the end: its webhook reaches the poller, which no
        # longer follows the job (and says so with a 202, so the simulator stops sending).
        await eventually(webhook_answered, "the upstream's completion webhook", 60)
    finally:
        await nc.close()
    assert (ended["reason"], ended["upstream_id"]) == ("cancelled", upstream_id)
    assert "sunk cost" in ended["detail"]
    every = [kind for kind, job, _ in watch.seen if job == job_id]  # repeats included
    assert set(every[every.index("cancelled") :]) == {"cancelled"}  # no progress, generated...
    kinds = watch.kinds(job_id)
    assert "generated" not in kinds
    assert "completed" not in kinds
    assert len(creates_of(stack, job_id)) == 1

    async def charged() -> bool:
        return (await job(stack, tenant, job_id))["charged_micros"] is not None

    await eventually(charged, "the sunk cost to be charged", 30)
    record = await job(stack, tenant, job_id)
    assert (record["status"], record["charged_micros"], record["assets"]) == (
        "cancelled", COST, [],
    )  # fmt: skip
    ledger = await spend(stack, tenant)
    assert ledger["total"]["micros"] == COST
    assert ledger["rows"][0]["charged_jobs"] == 1
    assert ledger["lifetime"]["reserved"]["micros"] == 0
    s3 = Minio(stack.s3_endpoint, access_key=stack.s3_access_key,
               secret_key=stack.s3_secret_key, secure=False)  # fmt: skip
    # The bucket is made by storage's first store: absent, it holds nothing either.
    stored = (
        list(s3.list_objects(stack.bucket, prefix=f"{tenant}/", recursive=True))
        if s3.bucket_exists(stack.bucket)
        else []
    )
    assert stored == []
    with capsys.disabled():
        print(f"\n[cancel] after submission: cancelled {took:.1f}s after `clipline cancel` "
              f"(stage {ended['stage']}); upstream {upstream_id} ran on, its webhook found "
              f"the job not followed; charged {COST} micro-dollars, nothing stored")  # fmt: skip

"""End to end: the simulator's signed webhook moves a job within 1 s, on a stack whose poller
polls only every 5 minutes (so polling cannot explain it); forgeries are refused on the wire;
the webhook secret is in no record."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from clipline import webhook_secret
from clipline.stack import LOCAL_API_KEY, STATE_FILE, WEBHOOK_PATH, StackOptions, StackState
from shared.contracts.ids import job_id_for
from tests.e2e.harness import as_tenant, running_stack
from tests.webhook_signing import OTHER_SECRET, event_body, signed

pytestmark = pytest.mark.e2e
SAFETY_SECONDS = 300.0
WITHIN = 1.0
DEADLINE = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=2.0,
        queue_seconds=0.2,
        poll_after_ms=200,  # the upstream's hint: ignored while webhooks are on
        env={"CLIPLINE_POLL_WEBHOOK_SAFETY_SECONDS": str(SAFETY_SECONDS)},
    )
    with running_stack(tmp_path_factory.mktemp("webhooks"), options) as state:
        yield state


def poller_url(state: StackState) -> str:
    port = next(p.port for p in state.processes if p.name == "poller")
    return f"http://127.0.0.1:{port}{WEBHOOK_PATH}"


def test_the_secret_is_kept_privately_and_recorded_nowhere(stack: StackState) -> None:
    home = Path(stack.home)
    secret = webhook_secret.read(home)
    assert secret is not None
    assert secret.startswith("whsec_")
    assert secret not in (home / STATE_FILE).read_text()
    simulator = next(p for p in stack.processes if p.name == "simulator")
    assert simulator.env["CLIPLINE_SIM_WEBHOOK_URL"] == poller_url(stack)
    for log in (home / "logs").glob("*"):
        if log.is_file():
            assert secret not in log.read_text(errors="replace"), log


def test_a_forged_webhook_is_refused_by_the_running_poller(stack: StackState) -> None:
    body = event_body("video_nobody")
    response = httpx.post(
        poller_url(stack), content=body, headers=signed(body, secret=OTHER_SECRET), timeout=10
    )
    assert response.status_code == 401
    assert response.json()["error"]["reason"] == "invalid_signature"


async def test_a_valid_webhook_moves_the_job_within_a_second(stack: StackState) -> None:
    tenant, key = "hooks", f"hook-{uuid.uuid4().hex}"
    job_id = job_id_for(tenant, key)
    events: dict[str, tuple[float, dict[str, Any]]] = {}
    seen: dict[str, asyncio.Event] = {k: asyncio.Event() for k in ("submitted", "generated")}
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)

    async def on_event(msg: Msg) -> None:
        kind = msg.subject.split(".")[2]
        events.setdefault(kind, (time.monotonic(), json.loads(msg.data)))
        if kind in seen:
            seen[kind].set()

    try:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.{job_id}", cb=on_event)
        async with httpx.AsyncClient(base_url=stack.intake_url, timeout=30) as http:
            body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "hook me"}
            headers = {"Idempotency-Key": key, **as_tenant(stack, tenant)}
            assert (await http.post("/v1/jobs", json=body, headers=headers)).status_code == 202
        await asyncio.wait_for(seen["submitted"].wait(), DEADLINE)
        video_id = events["submitted"][1]["upstream_id"]
        # The latest moment the upstream video was seen unfinished: completion came after it,
        # so generated_at - last_running bounds the webhook's latency from above.
        last_running = await watch_until_completed(stack, video_id)
        await asyncio.wait_for(seen["generated"].wait(), DEADLINE)
    finally:
        await nc.close()

    latency = events["generated"][0] - last_running
    print(f"\nwebhook latency: generated {latency * 1000:.0f} ms after the video completed")
    assert latency < WITHIN, f"generated {latency:.3f}s after completion"
    async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=10) as sim:
        deliveries = [
            d for d in (await sim.get("/control/webhooks")).json() if d["video_id"] == video_id
        ]
    assert [(d["type"], d["state"], d["last_status"]) for d in deliveries] == [
        ("video.completed", "delivered", 202)
    ]


async def watch_until_completed(stack: StackState, video_id: str) -> float:
    """Retrieve the video from the simulator as often as it answers until it is completed;
    the monotonic time of the last answer that still said otherwise."""
    last_running = time.monotonic()
    headers = {"Authorization": f"Bearer {LOCAL_API_KEY}"}
    deadline = last_running + DEADLINE
    async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=10) as sim:
        while time.monotonic() < deadline:
            asked = time.monotonic()
            video = (await sim.get(f"/v1/videos/{video_id}", headers=headers)).json()
            if video["status"] == "completed":
                return last_running
            assert video["status"] in ("queued", "in_progress"), video
            last_running = asked
    raise AssertionError(f"{video_id} not completed within {DEADLINE}s")

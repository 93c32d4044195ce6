"""End to end: a job naming a callback_url is delivered to a receiver on this machine, signed
with the secret `clipline webhooks set` printed; a failed attempt is retried by an intake
restarted after SIGKILL (the wait is durable), and delivered once, carrying the settled charge;
the secret is in no log."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from clipline.servers import LOOPBACK, free_port
from clipline.stack import StackState
from shared.contracts import JobCompletedV1
from shared.streams import JOBS_STREAM_NAME
from tests.e2e.harness import as_tenant, clipline, current, kill_hard
from tests.e2e.test_recovery import restart

pytestmark = pytest.mark.e2e
DEADLINE = 120.0
CONSUMER = JobCompletedV1.durable("intake")


@pytest.fixture
def stack(surfaces_stack: StackState) -> StackState:
    """The e2e modules' shared stack (tests/e2e/conftest.py)."""
    return surfaces_stack


class Receiver:
    """Answers 503 to the first POST, 204 to the rest; keeps every one."""

    def __init__(self) -> None:
        self.got: list[tuple[int, dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.port = free_port()

    async def hook(self, request: web.Request) -> web.Response:
        status = 503 if not self.got else 204
        self.got.append((status, dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, r.port).start()
    yield r
    await runner.cleanup()


async def until(check: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (found := await check()):
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)  # polling the API, with a deadline
    return found


async def test_a_retry_survives_a_kill_9_of_intake_and_delivers_once(
    stack: StackState, receiver: Receiver
) -> None:
    tenant = f"cb{uuid.uuid4().hex[:8]}"
    made = clipline(stack.home, "webhooks", "set", tenant)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[0]
    headers = as_tenant(stack, tenant)
    url = f"http://{LOOPBACK}:{receiver.port}/hook"
    async with httpx.AsyncClient(base_url=stack.intake_url, headers=headers, timeout=30) as http:
        body = {"size": "1280x720", "prompt": "a paper boat", "callback_url": url}
        asked = await http.post("/v1/jobs", json=body)
        assert asked.status_code == 202, asked.text
        job_id = asked.json()["job_id"]

        async def first_failed() -> bool:
            job = (await http.get(f"/v1/jobs/{job_id}")).json()
            target = ((job.get("callbacks") or {}).get("targets") or {}).get("job") or {}
            return target.get("last_status") == 503

        await until(first_failed, "the first attempt recorded as failed")
        kill_hard(current(stack.home).find("intake").pid)
        await restart(stack.home, "intake")

        async def delivered() -> dict[str, Any] | None:
            job: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}")).json()
            target = (job.get("callbacks") or {}).get("targets", {}).get("job", {})
            return job if target.get("state") == "delivered" else None

        job = await until(delivered, "the retry delivered by the restarted intake")

    # The event is then acked: nothing is left to send it again.
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:

        async def acked() -> bool:
            info = await nc.jetstream().consumer_info(JOBS_STREAM_NAME, CONSUMER)
            return not info.num_ack_pending and not info.num_pending

        await until(acked, "the completed event acked by intake")
    finally:
        await nc.close()
    assert [status for status, _, _ in receiver.got] == [503, 204]
    ids = {h["webhook-id"] for _, h, _ in receiver.got}
    assert len(ids) == 1  # one webhook-id for every attempt
    event = Webhook(secret).verify(receiver.got[-1][2], receiver.got[-1][1])
    assert (event["type"], event["data"]["job_id"]) == ("video.completed", job_id)
    assert "url" not in json.dumps(event["data"]["assets"])
    # Both attempts carry the charge pricing_guard settled (the first waited for it).
    charged = job["charged_micros"]
    assert isinstance(charged, int)
    assert charged > 0
    assert [json.loads(body)["data"]["charged_micros"] for _, _, body in receiver.got] == [
        charged, charged,
    ]  # fmt: skip
    target = job["callbacks"]["targets"]["job"]
    assert (target["attempts"], target["last_status"]) == (2, 204)
    assert [a["status"] for a in target["timeline"]] == [503, 204]
    for log in (Path(stack.home) / "logs").glob("*"):
        if log.is_file():
            assert secret not in log.read_text(errors="replace"), log

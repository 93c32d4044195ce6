"""What nats-server carries during a benchmark: its /varz counters, and a `>` subscription that
counts every message of clipline's account by class (bench/e2e_stats.py `classify`).

The `>` subscription connects as the stack's admin identity, whose user JWT has no publish or
subscribe limits (clipline/auth.py issues it `Permissions(everything=True)`), so it sees every
message of the account the services share: their publishes, JetStream API requests and the
server's replies to their inboxes, deliveries to their consumers, acks and advisories. It adds
its own deliveries to the server's out counters, so /varz figures are taken without it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.e2e_stats import classify
from clipline.stack import StackState

MARKER = "bench.wiretap.marker"
SETTLED_RATE = 50.0  # messages in per second: the idle stack takes in under 10
SETTLE_WINDOW = 1.0


def monitor_url(state: StackState) -> str:
    """nats-server's monitoring endpoint (its recorded health URL is on that port)."""
    health = urlsplit(state.find("nats").health)
    return f"{health.scheme}://{health.netloc}"


async def varz(monitor: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{monitor}/varz")
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        return body


class Wiretap:
    """Counts of every message in the account by class, while open."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.errors: list[str] = []
        self._nc: Client | None = None
        self._marker = ""
        self._marked = asyncio.Event()

    async def _on_message(self, msg: Msg) -> None:
        if msg.subject == self._marker:
            self._marked.set()
            return
        self.counts[classify(msg.subject, msg.reply)] += 1
        self.total += 1

    async def _on_error(self, exc: Exception) -> None:
        self.errors.append(f"{type(exc).__name__}: {exc}")

    async def open(self, state: StackState) -> None:
        self._nc = await nats.connect(
            state.nats_url, user_credentials=state.nats_creds, error_cb=self._on_error
        )
        # Unbounded on this side: a dropped message would be a wrong count (reported as an error).
        await self._nc.subscribe(
            ">", cb=self._on_message, pending_msgs_limit=0, pending_bytes_limit=0
        )
        await self._nc.flush()

    async def flush(self) -> None:
        """Every message the server sent this subscription so far has been counted: a marker
        published now comes back after them (one connection, in order), and is not counted."""
        assert self._nc is not None
        self._marker = f"{MARKER}.{uuid.uuid4().hex}"
        self._marked.clear()
        await self._nc.publish(self._marker, b"")
        await asyncio.wait_for(self._marked.wait(), 30)

    def reset(self) -> None:
        self.counts.clear()
        self.total = 0

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


async def ack_pending(monitor: str, stream: str) -> dict[str, int]:
    """num_ack_pending of every durable consumer of `stream`, from nats-server's /jsz (the
    monitoring port: no message through the server, so none counted in /varz)."""
    query = "accounts=true&streams=true&consumers=true"
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{monitor}/jsz?{query}")
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
    pending: dict[str, int] = {}
    for account in body.get("account_details") or []:
        for found in account.get("stream_detail") or []:
            if found.get("name") != stream:
                continue
            for consumer in found.get("consumer_detail") or []:
                pending[consumer["name"]] = int(consumer.get("num_ack_pending", 0))
    return pending


async def drained(
    monitor: str, stream: str, deadline_seconds: float = 120.0
) -> dict[str, int] | None:
    """Wait until no durable consumer of `stream` has a message pending its ack: no delayed
    nak (a durable timer, such as a followed job's next poll) is left to come due. None when
    drained; at the deadline, the consumers still holding messages and how many."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        held = {name: n for name, n in (await ack_pending(monitor, stream)).items() if n}
        if not held or time.monotonic() >= deadline:
            return held or None
        await asyncio.sleep(SETTLE_WINDOW)  # polling a counter over HTTP, not synchronisation


async def settle(monitor: str, deadline_seconds: float = 120.0) -> float | None:
    """Wait until nats-server takes in fewer than SETTLED_RATE messages a second over a window
    of SETTLE_WINDOW (the work a job leaves behind it, such as its budget settlement after its
    `completed` event, is done). The monotonic time that window began; None at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    count, at = (await varz(monitor))["in_msgs"], time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_WINDOW)  # a measuring window, not synchronisation
        now_count, now = (await varz(monitor))["in_msgs"], time.monotonic()
        if (now_count - count) / (now - at) < SETTLED_RATE:
            return at
        count, at = now_count, now
    return None

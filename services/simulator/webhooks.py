"""Webhook delivery: Standard Webhooks signing and a retrying dispatcher (reference §8).

The dispatcher keeps one heap of due deliveries ordered by `Clock.monotonic()` and one worker
task that sleeps until the earliest is due, so thousands of pending events cost one task. Each
attempt runs as its own short task (at most `max_concurrency` at once) and a failed attempt goes
back on the heap, so a slow or failing receiver never holds up the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import httpx

from services.simulator.clock import Clock, SystemClock

log = logging.getLogger(__name__)

EventType = Literal["video.completed", "video.failed"]
DeliveryState = Literal["pending", "delivered", "gave_up"]
USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
WHSEC_PREFIX = "whsec_"
# A test clock may jump forward without waking the worker; re-read it at least this often.
MAX_IDLE_WAIT_SECONDS = 1.0
DEFAULT_TIMEOUT_SECONDS = 10.0


def new_secret(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh `whsec_` secret: base64 of 32 random bytes (the SDKs sign with the raw bytes)."""
    return WHSEC_PREFIX + base64.b64encode(random_bytes(32)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """The HMAC key of a secret, decoded exactly as the openai SDKs decode it."""
    if secret.startswith(WHSEC_PREFIX):
        return base64.b64decode(secret[len(WHSEC_PREFIX) :])
    return secret.encode("utf-8")


def _signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>`."""
    return _signature(signing_key(secret), webhook_id, timestamp, body)


def event_body(event_id: str, event_type: str, video_id: str, created_at: int) -> bytes:
    """The compact JSON event; it names the video only (clients retrieve it for details)."""
    event = {
        "id": event_id,
        "object": "event",
        "created_at": created_at,
        "type": event_type,
        "data": {"id": video_id},
    }
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def backoff_delay(attempt: int, base_seconds: float, max_seconds: float) -> float:
    """Wait after failed attempt `attempt` (1-based): doubling from `base_seconds`, capped."""
    # The exponent is clamped so a huge attempt count cannot overflow the float.
    return min(base_seconds * 2.0 ** min(attempt - 1, 64), max_seconds)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event's delivery record, as `GET /control/webhooks` shows it."""

    event_id: str
    webhook_id: str
    type: EventType
    video_id: str
    attempts: int = 0
    state: DeliveryState = "pending"
    last_status: int | None = None  # HTTP status of the last attempt; None: no response

    def to_dict(self) -> dict[str, str | int | None]:
        return {
            "event_id": self.event_id,
            "webhook_id": self.webhook_id,
            "type": self.type,
            "video_id": self.video_id,
            "attempts": self.attempts,
            "state": self.state,
            "last_status": self.last_status,
        }


@dataclass(slots=True)
class _Job:
    """A scheduled event; `delivery` and `body` exist once it is due (the event is created)."""

    seq: int
    generation: int  # WebhookDispatcher.reset() abandons the jobs of earlier generations
    video_id: str
    type: EventType
    delivery: Delivery | None = None
    body: bytes = b""


class WebhookDispatcher:
    """Signs and POSTs `video.*` events to one URL, retrying with exponential backoff."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        max_attempts: int,
        backoff_seconds: float,
        backoff_max_seconds: float,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        max_concurrency: int = 32,
    ) -> None:
        if max_attempts < 1 or max_concurrency < 1:
            raise ValueError("max_attempts and max_concurrency must be at least 1")
        self._url = url
        self._secret = secret
        self._key = signing_key(secret)  # fails fast on a malformed whsec_ secret
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._backoff_max_seconds = backoff_max_seconds
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=DEFAULT_TIMEOUT_SECONDS)
        self._clock: Clock = clock or SystemClock()
        self._random_bytes = random_bytes
        self._max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self._heap: list[tuple[float, int, _Job]] = []
        self._jobs: list[_Job] = []  # scheduling order
        self._seq = 0
        self._generation = 0
        self._unsettled = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"WebhookDispatcher(url={self._url!r}, pending={self._unsettled})"

    @property
    def secret(self) -> str:
        return self._secret

    def schedule(self, video_id: str, event_type: EventType, due: float) -> None:
        """Deliver an event for `video_id` from `due` (a `clock.monotonic()` value) on.

        Sync, but must run inside the event loop: it starts the worker on first use.
        """
        if self._closed:
            raise RuntimeError("the webhook dispatcher is closed")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())
        job = _Job(self._seq, self._generation, video_id, event_type)
        self._seq += 1
        self._jobs.append(job)
        self._unsettled += 1
        self._idle.clear()
        heapq.heappush(self._heap, (due, job.seq, job))
        self._wakeup.set()

    def wake(self) -> None:
        """Re-read the clock now (for a test clock that jumped forward)."""
        self._wakeup.set()

    def log(self) -> list[Delivery]:
        """Every event created so far (due reached), in scheduling order."""
        return [job.delivery for job in self._jobs if job.delivery is not None]

    async def join(self) -> None:
        """Wait until every scheduled event is delivered or given up."""
        await self._idle.wait()

    def reset(self) -> None:
        """Forget pending events, attempts in flight and the log."""
        for task in self._attempts:
            task.cancel()
        self._attempts.clear()
        self._generation += 1
        self._heap.clear()
        self._jobs.clear()
        self._unsettled = 0
        self._idle.set()
        # Cancelled attempts release their slots later; new ones must not wait for that.
        self._slots = asyncio.Semaphore(self._max_concurrency)
        self._wakeup.set()

    async def aclose(self) -> None:
        """Stop the worker and attempts in flight; close the client if this created it."""
        self._closed = True
        tasks = [*self._attempts, *([self._worker] if self._worker else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._attempts.clear()
        self._worker = None
        if self._owns_client:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            due, _, job = self._heap[0]
            delay = due - self._clock.monotonic()
            if delay > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), min(delay, MAX_IDLE_WAIT_SECONDS))
                continue
            heapq.heappop(self._heap)
            slots = self._slots
            await slots.acquire()
            if job.generation != self._generation:  # reset() while waiting for a slot
                slots.release()
                continue
            task = asyncio.create_task(self._attempt(job, slots))
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)

    def _create_event(self, job: _Job) -> Delivery:
        event_id = "evt_" + self._random_bytes(16).hex()
        webhook_id = "wh_" + self._random_bytes(16).hex()
        created_at = int(self._clock.time())
        job.body = event_body(event_id, job.type, job.video_id, created_at)
        return Delivery(event_id, webhook_id, job.type, job.video_id)

    async def _attempt(self, job: _Job, slots: asyncio.Semaphore) -> None:
        try:
            delivery = job.delivery or self._create_event(job)
            job.delivery = delivery
            status = await self._post(delivery, job.body)
            if job.generation != self._generation:
                return
            attempts = delivery.attempts + 1
            if status is not None and 200 <= status < 300:
                self._settle(
                    job, replace(delivery, attempts=attempts, state="delivered", last_status=status)
                )
                return
            if attempts >= self._max_attempts:
                log.warning(
                    "webhook %s for %s: gave up after %d attempts",
                    delivery.event_id,
                    delivery.video_id,
                    attempts,
                )
                self._settle(
                    job, replace(delivery, attempts=attempts, state="gave_up", last_status=status)
                )
                return
            job.delivery = replace(delivery, attempts=attempts, last_status=status)
            delay = backoff_delay(attempts, self._backoff_seconds, self._backoff_max_seconds)
            heapq.heappush(self._heap, (self._clock.monotonic() + delay, job.seq, job))
            self._wakeup.set()
        finally:
            slots.release()

    async def _post(self, delivery: Delivery, body: bytes) -> int | None:
        timestamp = int(self._clock.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": _signature(self._key, delivery.webhook_id, timestamp, body),
        }
        attempt = delivery.attempts + 1
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning(
                "webhook %s for %s: attempt %d failed: %s",
                delivery.event_id,
                delivery.video_id,
                attempt,
                type(exc).__name__,
            )
            return None
        except Exception:  # a bug must not leave the event pending forever
            log.exception(
                "webhook %s for %s: attempt %d raised",
                delivery.event_id,
                delivery.video_id,
                attempt,
            )
            return None
        if not response.is_success:
            log.warning(
                "webhook %s for %s: attempt %d got HTTP %d",
                delivery.event_id,
                delivery.video_id,
                attempt,
                response.status_code,
            )
        return response.status_code

    def _settle(self, job: _Job, delivery: Delivery) -> None:
        job.delivery = delivery
        self._unsettled -= 1
        if self._unsettled == 0:
            self._idle.set()

"""Unit tests of the simulator's webhooks: signing (checked by hand and by the openai SDK) and the
retrying dispatcher against an in-process receiver (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import openai
import pytest

from services.simulator.webhooks import (
    USER_AGENT,
    Delivery,
    WebhookDispatcher,
    backoff_delay,
    event_body,
    new_secret,
    sign,
    signing_key,
)

RAW_KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()
DEADLINE = 5.0
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class WallClock:
    """Real monotonic time; wall time fixed, advancing one second per read."""

    def __init__(self, start: int = 1_750_000_000) -> None:
        self.now = start

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        self.now += 1
        return float(self.now)


@dataclass
class Receiver:
    """Records requests and answers with a scripted status per request (then the last one)."""

    statuses: list[int | type[httpx.RequestError]] = field(default_factory=lambda: [200])
    requests: list[httpx.Request] = field(default_factory=list)
    expected: int = 1
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) >= self.expected:
            self.enough.set()
        answer = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        if isinstance(answer, int):
            return httpx.Response(answer)
        raise answer("receiver unreachable", request=request)

    async def wait(self) -> None:
        await asyncio.wait_for(self.enough.wait(), DEADLINE)


class Factory(Protocol):
    def __call__(
        self,
        handler: Handler,
        *,
        max_attempts: int = 5,
        clock: WallClock | None = None,
        max_concurrency: int = 32,
    ) -> WebhookDispatcher: ...


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    made: list[tuple[WebhookDispatcher, httpx.AsyncClient]] = []

    def build(
        handler: Handler,
        *,
        max_attempts: int = 5,
        clock: WallClock | None = None,
        max_concurrency: int = 32,
    ) -> WebhookDispatcher:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        dispatcher = WebhookDispatcher(
            "http://receiver/hook",
            SECRET,
            max_attempts=max_attempts,
            backoff_seconds=0.001,
            backoff_max_seconds=0.004,
            client=client,
            clock=clock,
            max_concurrency=max_concurrency,
        )
        made.append((dispatcher, client))
        return dispatcher

    yield build
    for dispatcher, client in made:
        await dispatcher.aclose()
        await client.aclose()


async def settle(dispatcher: WebhookDispatcher) -> None:
    await asyncio.wait_for(dispatcher.join(), DEADLINE)


def by_hand(key: bytes, webhook_id: str, timestamp: str, body: bytes) -> str:
    message = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


# --- signing -------------------------------------------------------------------------------------


def test_new_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secret = new_secret(lambda n: bytes([7]) * n)
    assert secret == "whsec_" + base64.b64encode(bytes([7]) * 32).decode()
    assert signing_key(secret) == bytes([7]) * 32
    assert new_secret() != new_secret()


def test_signing_key_decodes_whsec_and_takes_other_secrets_verbatim() -> None:
    assert signing_key(SECRET) == RAW_KEY
    assert signing_key("plain-secret") == b"plain-secret"


def test_sign_matches_an_independent_hmac() -> None:
    body = b'{"id":"evt_1"}'
    expected = by_hand(RAW_KEY, "wh_abc", "1750287078", body)
    assert sign(SECRET, "wh_abc", 1750287078, body) == expected
    assert sign(SECRET, "wh_abd", 1750287078, body) != expected
    assert sign(SECRET, "wh_abc", 1750287079, body) != expected
    assert sign("plain", "wh_abc", 1750287078, body) == by_hand(
        b"plain", "wh_abc", "1750287078", body
    )


def test_event_body_is_compact_json_in_the_guide_shape() -> None:
    body = event_body("evt_1", "video.failed", "video_9", 1758941485)
    assert body == (
        b'{"id":"evt_1","object":"event","created_at":1758941485,'
        b'"type":"video.failed","data":{"id":"video_9"}}'
    )


def signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    timestamp = int(time.time())  # the SDK checks the timestamp against its own clock
    return {
        "webhook-id": "wh_" + "1" * 32,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "wh_" + "1" * 32, timestamp, body),
    }


def sdk_unwrap(body: bytes, headers: dict[str, str], secret: str) -> Any:
    """`webhooks.unwrap` of the official SDK. It has no video.* event class (reference §8.1) and
    returns a loosely built event of another class, so its static type says nothing useful."""
    return openai.OpenAI(api_key="x", webhook_secret=secret).webhooks.unwrap(body, headers)


def test_the_openai_sdk_accepts_the_signature_and_reads_the_event() -> None:
    secret = new_secret()
    body = event_body("evt_" + "a" * 32, "video.completed", "video_123", int(time.time()))
    event = sdk_unwrap(body, signed_headers(body, secret), secret)
    assert event.type == "video.completed"
    assert event.data.id == "video_123"


def test_the_openai_sdk_rejects_a_tampered_body() -> None:
    secret = new_secret()
    body = event_body("evt_1", "video.completed", "video_123", int(time.time()))
    headers = signed_headers(body, secret)
    tampered = body.replace(b"video_123", b"video_124")
    client = openai.OpenAI(api_key="x", webhook_secret=secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(tampered, headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=new_secret())


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(10_000, 1.0, 3600.0) == 3600.0


def test_delivery_as_json() -> None:
    delivery = Delivery("evt_1", "wh_1", "video.completed", "video_1", 2, "delivered", 204)
    assert json.loads(json.dumps(delivery.to_dict())) == {
        "event_id": "evt_1",
        "webhook_id": "wh_1",
        "type": "video.completed",
        "video_id": "video_1",
        "attempts": 2,
        "state": "delivered",
        "last_status": 204,
    }


# --- dispatcher ----------------------------------------------------------------------------------


async def test_first_try_success_is_a_verifiable_openai_delivery(make: Factory) -> None:
    receiver = Receiver(statuses=[204])
    dispatcher = make(receiver)
    dispatcher.schedule("video_1", "video.completed", time.monotonic())
    await receiver.wait()
    await settle(dispatcher)

    [request] = receiver.requests
    assert request.method == "POST"
    assert str(request.url) == "http://receiver/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert re.fullmatch(r"wh_[0-9a-f]{32}", request.headers["webhook-id"])
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    event = sdk_unwrap(request.content, dict(request.headers), SECRET)
    assert event.type == "video.completed"
    assert event.data.id == "video_1"
    payload = json.loads(request.content)
    assert re.fullmatch(r"evt_[0-9a-f]{32}", payload["id"])
    assert payload["object"] == "event"
    assert dispatcher.log() == [
        Delivery(
            payload["id"],
            request.headers["webhook-id"],
            "video.completed",
            "video_1",
            1,
            "delivered",
            204,
        )
    ]


async def test_retries_keep_id_and_body_and_re_sign_each_attempt(make: Factory) -> None:
    receiver = Receiver(statuses=[500, 500, 200], expected=3)
    clock = WallClock()
    dispatcher = make(receiver, clock=clock)
    dispatcher.schedule("video_2", "video.failed", time.monotonic())
    await receiver.wait()
    await settle(dispatcher)

    assert len(receiver.requests) == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.content for r in receiver.requests}) == 1
    timestamps = [r.headers["webhook-timestamp"] for r in receiver.requests]
    assert len(set(timestamps)) == 3  # a fresh timestamp per attempt...
    for request in receiver.requests:  # ...and a signature over it
        assert request.headers["webhook-signature"] == by_hand(
            RAW_KEY,
            request.headers["webhook-id"],
            request.headers["webhook-timestamp"],
            request.content,
        )
    assert json.loads(receiver.requests[0].content)["type"] == "video.failed"
    [delivery] = dispatcher.log()
    assert (delivery.attempts, delivery.state, delivery.last_status) == (3, "delivered", 200)


async def test_created_at_and_timestamp_come_from_the_clock(make: Factory) -> None:
    receiver = Receiver()
    clock = WallClock(start=1_700_000_000)
    dispatcher = make(receiver, clock=clock)
    dispatcher.schedule("video_3", "video.completed", time.monotonic())
    await receiver.wait()
    [request] = receiver.requests
    assert json.loads(request.content)["created_at"] == 1_700_000_001
    assert request.headers["webhook-timestamp"] == "1700000002"


async def test_always_failing_receiver_gives_up_after_max_attempts(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver(statuses=[httpx.ConnectError, 500])
    dispatcher = make(receiver, max_attempts=4)
    with caplog.at_level(logging.WARNING, logger="services.simulator.webhooks"):
        dispatcher.schedule("video_4", "video.completed", time.monotonic())
        await settle(dispatcher)

    assert len(receiver.requests) == 4
    [delivery] = dispatcher.log()
    assert (delivery.attempts, delivery.state, delivery.last_status) == (4, "gave_up", 500)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5  # four failed attempts, then giving up
    text = caplog.text
    assert delivery.event_id in text
    assert SECRET not in text
    assert SECRET.removeprefix("whsec_") not in text
    assert receiver.requests[0].headers["webhook-signature"].removeprefix("v1,") not in text


async def test_connection_errors_are_retried(make: Factory) -> None:
    receiver = Receiver(statuses=[httpx.ConnectError, httpx.ReadTimeout, 202], expected=3)
    dispatcher = make(receiver)
    dispatcher.schedule("video_5", "video.completed", time.monotonic())
    await receiver.wait()
    await settle(dispatcher)
    [delivery] = dispatcher.log()
    assert (delivery.attempts, delivery.state, delivery.last_status) == (3, "delivered", 202)


async def test_unreachable_receiver_gives_up_with_no_status(make: Factory) -> None:
    receiver = Receiver(statuses=[httpx.ConnectError])
    dispatcher = make(receiver, max_attempts=2)
    dispatcher.schedule("video_6", "video.completed", time.monotonic())
    await settle(dispatcher)
    [delivery] = dispatcher.log()
    assert (delivery.attempts, delivery.state, delivery.last_status) == (2, "gave_up", None)


async def test_events_go_out_in_due_order_and_the_log_in_scheduling_order(make: Factory) -> None:
    receiver = Receiver(expected=3)
    dispatcher = make(receiver)
    now = time.monotonic()
    dispatcher.schedule("video_late", "video.completed", now + 0.06)
    dispatcher.schedule("video_now", "video.completed", now)
    dispatcher.schedule("video_mid", "video.failed", now + 0.03)
    await receiver.wait()
    await settle(dispatcher)
    delivered = [json.loads(r.content)["data"]["id"] for r in receiver.requests]
    assert delivered == ["video_now", "video_mid", "video_late"]
    assert [d.video_id for d in dispatcher.log()] == ["video_late", "video_now", "video_mid"]


async def test_an_event_appears_in_the_log_only_once_due_and_reset_forgets(make: Factory) -> None:
    receiver = Receiver()
    dispatcher = make(receiver)
    dispatcher.schedule("video_future", "video.completed", time.monotonic() + 3600)
    dispatcher.schedule("video_due", "video.completed", time.monotonic())
    await receiver.wait()
    # One event is still pending, so join() must not return yet.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(dispatcher.join(), 0.05)
    assert [d.video_id for d in dispatcher.log()] == ["video_due"]

    dispatcher.reset()
    assert dispatcher.log() == []
    await settle(dispatcher)
    dispatcher.schedule("video_after", "video.completed", time.monotonic())
    await settle(dispatcher)
    assert [d.video_id for d in dispatcher.log()] == ["video_after"]
    assert len(receiver.requests) == 2


async def test_a_slow_receiver_does_not_stall_other_deliveries(make: Factory) -> None:
    release = asyncio.Event()
    second_arrived = asyncio.Event()
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        video_id = json.loads(request.content)["data"]["id"]
        seen.append(video_id)
        if video_id == "video_slow":
            await release.wait()
        else:
            second_arrived.set()
        return httpx.Response(200)

    dispatcher = make(handler)
    dispatcher.schedule("video_slow", "video.completed", time.monotonic())
    dispatcher.schedule("video_fast", "video.completed", time.monotonic())
    await asyncio.wait_for(second_arrived.wait(), DEADLINE)
    states = {d.video_id: d.state for d in dispatcher.log()}
    assert states["video_slow"] == "pending"
    release.set()
    await settle(dispatcher)
    assert seen == ["video_slow", "video_fast"]
    assert {d.state for d in dispatcher.log()} == {"delivered"}


async def test_concurrent_deliveries_are_bounded(make: Factory) -> None:
    release = asyncio.Event()
    two_in_flight = asyncio.Event()
    in_flight = 0
    peak = 0

    async def handler(_: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            two_in_flight.set()
        await release.wait()
        in_flight -= 1
        return httpx.Response(200)

    dispatcher = make(handler, max_concurrency=2)
    for n in range(6):
        dispatcher.schedule(f"video_{n}", "video.completed", time.monotonic())
    await asyncio.wait_for(two_in_flight.wait(), DEADLINE)
    assert peak == 2
    release.set()
    await settle(dispatcher)
    assert peak == 2
    assert len(dispatcher.log()) == 6


async def test_thousands_of_events_share_one_worker(make: Factory) -> None:
    receiver = Receiver(expected=3000)
    dispatcher = make(receiver)
    tasks_before = len(asyncio.all_tasks())
    now = time.monotonic()
    for n in range(3000):
        dispatcher.schedule(f"video_{n}", "video.completed", now + (n % 7) * 0.001)
    assert len(asyncio.all_tasks()) == tasks_before + 1
    await receiver.wait()
    await settle(dispatcher)
    log = dispatcher.log()
    assert len(log) == 3000
    assert {d.state for d in log} == {"delivered"}
    assert len({d.event_id for d in log}) == 3000


async def test_a_closed_dispatcher_refuses_new_events(make: Factory) -> None:
    dispatcher = make(Receiver())
    await dispatcher.aclose()
    with pytest.raises(RuntimeError):
        dispatcher.schedule("video_x", "video.completed", time.monotonic())


def test_a_malformed_whsec_secret_fails_fast() -> None:
    with pytest.raises(ValueError, match="padding"):
        WebhookDispatcher(
            "http://receiver/hook",
            "whsec_abc",
            max_attempts=1,
            backoff_seconds=0,
            backoff_max_seconds=0,
        )


async def test_the_secret_never_shows_in_repr() -> None:
    dispatcher = WebhookDispatcher(
        "http://receiver/hook", SECRET, max_attempts=1, backoff_seconds=0, backoff_max_seconds=0
    )
    assert SECRET.removeprefix("whsec_") not in repr(dispatcher)
    assert dispatcher.secret == SECRET
    await dispatcher.aclose()

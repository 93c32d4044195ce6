"""Pull fetches over one standing pull request: a message is handed on as soon as it arrives,
and one request brings up to a batch of them, however slowly they come.

nats-py 2.16's `PullSubscription.fetch(batch=n)` either returns at once what a no-wait request
found or, when nothing was there, sends a lingering request and waits for all `n` messages until
its timeout: under light load a message would wait seconds for the batch to fill, so clipline
fetched one message per pull request (a request and its answer on the wire per delivery, and
more for an empty poll). `fetch` here keeps one pull request open on the server (for `n`
messages, expiring after REQUEST_SECONDS) and returns as soon as a message has arrived, with
whatever else has arrived by then; the next fetch takes what the same request delivered
meanwhile, and only asks again once that request is used up, expired (its 408) or refused.
Messages it delivered wait in the subscription for the next fetch: at most a batch, as with
nats-py.

Two nats-py quirks are handled here rather than by callers: an empty fetch raises a plain
`asyncio.TimeoutError` where FastStream 0.7.8's pull loop suppresses only
`nats.errors.TimeoutError` (the loop would die with an ERROR traceback while idle); and
nats-py's own drain of messages already delivered takes all of them whatever the batch asked.
`install()` patches the class (every subscription of the process); it is idempotent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

REQUEST_SECONDS = 5.0
"""How long one pull request stays open on the server; then it answers 408 and a new one is
sent (idle, a consumer asks once per REQUEST_SECONDS)."""
LOST_SECONDS = 1.0
"""A request whose 408 has not come this long after its expiry was lost with its connection:
a new one is sent."""
REFUSED_PAUSE_SECONDS = 0.1
"""After a refused request (409: too many waiting, max ack pending), the next one waits this
long: never a hot loop of requests."""
_HEARTBEAT, _EXPIRED = "100", "408"


@dataclass
class _Standing:
    """The subscription's open pull request, as this process knows it: one at a time, so a
    status the server sends (408 expired, 409 refused) is about that one."""

    until: float = 0.0
    left: int = 0

    def open(self, now: float) -> bool:
        return self.left > 0 and now < self.until + LOST_SECONDS


def install() -> None:
    pull = JetStreamContext.PullSubscription
    if getattr(pull.fetch, "_clipline_fixed", False):
        return

    async def fetch(
        self: Any,
        batch: int = 1,
        timeout: float | None = 5,  # noqa: ASYNC109 (nats-py's signature; called by keyword)
        heartbeat: float | None = None,
    ) -> list[Msg]:
        try:
            return await _fetch(
                self, max(1, batch), REQUEST_SECONDS if timeout is None else timeout
            )
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc

    functools.update_wrapper(fetch, pull.fetch)
    fetch._clipline_fixed = True  # type: ignore[attr-defined]
    pull.fetch = fetch  # type: ignore[method-assign]


async def _fetch(pull: Any, batch: int, within: float) -> list[Msg]:
    standing: _Standing = pull.__dict__.setdefault("_clipline_standing", _Standing())
    msgs = _drain(pull, standing, batch)
    if msgs:
        return msgs
    deadline = time.monotonic() + within
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise nats.errors.TimeoutError
        if not standing.open(now):
            await _ask(pull, standing, batch, now)
        wait = min(deadline, standing.until + LOST_SECONDS) - now
        try:
            msg = await pull._sub.next_msg(timeout=max(wait, 0.001))
        except (TimeoutError, nats.errors.TimeoutError):
            continue  # the fetch's time is up (raised above), or the request was lost
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            standing.left -= 1
            return [msg, *_drain(pull, standing, batch - 1)]
        if status == _HEARTBEAT:
            continue
        standing.left = 0  # 408 expired, 404, 409 refused: this request is over
        if status != _EXPIRED:
            await asyncio.sleep(min(REFUSED_PAUSE_SECONDS, max(0.0, deadline - now)))


async def _ask(pull: Any, standing: _Standing, batch: int, now: float) -> None:
    """One pull request for `batch` messages, open for REQUEST_SECONDS."""
    expires = int(REQUEST_SECONDS * 1_000_000_000)
    request = json.dumps({"batch": batch, "expires": expires}).encode()
    await pull._nc.publish(pull._nms, request, pull._deliver)
    standing.until, standing.left = now + REQUEST_SECONDS, batch


def _drain(pull: Any, standing: _Standing, most: int) -> list[Msg]:
    """Messages already delivered to the subscription, at most `most`; a status among them
    ends the request it answers (a 408 of an expired one, a 409)."""
    queue: asyncio.Queue[Msg] = pull._sub._pending_queue
    msgs: list[Msg] = []
    while len(msgs) < most and not queue.empty():
        msg = queue.get_nowait()
        pull._sub._pending_size -= len(msg.data)
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            msgs.append(msg)
            standing.left -= 1
        elif status != _HEARTBEAT:
            standing.left = 0
    return msgs


def take_delivered(pull: Any) -> list[Msg]:
    """Every message delivered to the subscription and not yet fetched (statuses dropped): what
    a stopping consumer hands back."""
    standing: _Standing = pull.__dict__.setdefault("_clipline_standing", _Standing())
    return _drain(pull, standing, pull._sub._pending_queue.qsize())

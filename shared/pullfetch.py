"""Pull fetches that wait for one message and take what else is ready, in one more request.

nats-py 2.16's `PullSubscription.fetch(batch=n)` either returns at once what a no-wait request
found or, when nothing was there, sends a lingering request and waits for all `n` messages until
its timeout: under light load a message would wait seconds for the batch to fill, so clipline
fetched one message per pull request (two messages on the wire per delivery, plus the answer).
`fetch` here first asks, without waiting, for up to `n` that are ready: under load one pull
request brings many messages. When none is ready it waits as a batch of one does (no added
latency), then asks once more, without waiting, for what else is ready.

Two nats-py quirks handled here rather than by callers: an empty fetch raises a plain
`asyncio.TimeoutError` where FastStream 0.7.8's pull loop suppresses only
`nats.errors.TimeoutError` (the loop would die with an ERROR traceback while idle); and
nats-py's own drain of messages already delivered takes all of them whatever the batch asked.
Both are worked around by `install()`, idempotent; it patches the class (every subscription).
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

TOP_UP_WAIT_SECONDS = 0.25
"""How long the no-wait request's answer may take; it normally comes in a millisecond. An answer
later than that is not lost: its messages wait in the subscription for the next fetch."""
_NO_MESSAGES, _TIMEOUT, _HEARTBEAT = "404", "408", "100"


def install() -> None:
    pull = JetStreamContext.PullSubscription
    if getattr(pull.fetch, "_clipline_fixed", False):
        return
    original = pull.fetch

    @functools.wraps(original)
    async def fetch(
        self: Any,
        batch: int = 1,
        timeout: float | None = 5,  # noqa: ASYNC109 (nats-py's signature; called by keyword)
        **kwargs: Any,
    ) -> Any:
        try:
            msgs = _drain(self, batch) or await _top_up(self, batch)
            if not msgs:  # nothing ready: wait for one as a batch of one waits, then top up
                msgs = await original(self, 1, timeout, **kwargs)
                if len(msgs) < batch:
                    msgs += await _top_up(self, batch - len(msgs))
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc
        return msgs

    fetch._clipline_fixed = True  # type: ignore[attr-defined]
    pull.fetch = fetch  # type: ignore[method-assign, assignment]


def _status(msg: Msg) -> str | None:
    return JetStreamContext.is_status_msg(msg)


def _drain(pull: Any, most: int) -> list[Msg]:
    """Messages already delivered to the subscription (a late answer to a top-up), at most
    `most`; status messages among them answered earlier requests and are dropped."""
    queue: asyncio.Queue[Msg] = pull._sub._pending_queue
    msgs: list[Msg] = []
    while len(msgs) < most and not queue.empty():
        msg = queue.get_nowait()
        pull._sub._pending_size -= len(msg.data)
        if _status(msg) is None:
            msgs.append(msg)
    return msgs


async def _top_up(pull: Any, most: int) -> list[Msg]:
    """Up to `most` messages that are ready now, by one no-wait pull request."""
    request = json.dumps({"batch": most, "no_wait": True}).encode()
    await pull._nc.publish(pull._nms, request, pull._deliver)
    msgs: list[Msg] = []
    while len(msgs) < most:
        try:
            msg = await pull._sub.next_msg(timeout=TOP_UP_WAIT_SECONDS)
        except (TimeoutError, nats.errors.TimeoutError):
            break
        status = _status(msg)
        if status is None:
            msgs.append(msg)
        elif status != _HEARTBEAT:
            break  # 404 no more messages, 408, 409 (max ack pending): the request is over
    return msgs

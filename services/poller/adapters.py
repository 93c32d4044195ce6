"""poller adapters: webhook ids taken, in a JetStream KV bucket (compare-and-set create)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


class KvSeenWebhooks:
    """SeenWebhooks on the clipline_webhooks bucket, whose ttl outlives the timestamp
    tolerance. `create` succeeds for one writer only, so two replicas never both take an id."""

    def __init__(self, kv: Callable[[], Awaitable[KeyValue]]) -> None:
        self._kv = kv

    async def claim(self, webhook_id: str) -> bool:
        kv = await self._kv()
        try:
            await kv.create(_key(webhook_id), b"1")
        except KeyWrongLastSequenceError:
            return False
        return True

    async def release(self, webhook_id: str) -> None:
        kv = await self._kv()
        with contextlib.suppress(KeyNotFoundError):
            await kv.delete(_key(webhook_id))


def _key(webhook_id: str) -> str:
    """The id is the sender's, of any length and alphabet: keyed by its digest."""
    return hashlib.sha256(webhook_id.encode()).hexdigest()

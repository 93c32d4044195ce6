"""Read the current value of every KV key matching a subject pattern, without missing any.

nats-py's `kv.watch()` (and `keys()`, built on it) signals "initial values done" by comparing
the consumer's pending count with what its callback has processed so far; when the server has
already pushed the matches but the callback has not run yet, that count reads 0 and the marker
comes first, so a scan of a busy bucket can return nothing (nats-py 2.16; seen under load).
Here an ephemeral pull consumer delivers the last message per subject and the scan stops at
the message whose own metadata says nothing is pending after it.
"""

from __future__ import annotations

import contextlib

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

KV_OPERATION = "KV-Operation"
BATCH = 256
MAX_FETCHES = 100_000


class ScanError(RuntimeError):
    """The scan could not finish (the server stopped delivering); the caller retries."""


async def scan(
    js: JetStreamContext, bucket: str, pattern: str, *, meta_only: bool = False
) -> list[tuple[str, bytes]]:
    """(key, value) of every live key of `bucket` matching `pattern` (`*` and `>` as in
    subjects); deleted keys are left out. With `meta_only`, values are empty."""
    prefix = f"$KV.{bucket}."
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        headers_only=meta_only,
        inactive_threshold=30.0,
        mem_storage=True,
    )
    # Under the connection's own inbox prefix (nats-py would use `_INBOX.`): an identity may
    # subscribe only under its own.
    inbox = (js._nc.new_inbox() + ".").encode()
    sub = await js.pull_subscribe(
        prefix + pattern, stream=f"KV_{bucket}", config=config, inbox_prefix=inbox
    )
    found: dict[str, bytes] = {}
    try:
        if (await sub.consumer_info()).num_pending == 0:
            return []
        for _ in range(MAX_FETCHES):
            try:
                messages = await sub.fetch(BATCH, timeout=5.0)
            except (TimeoutError, nats.errors.TimeoutError):
                # nats-py 2.16 raises a plain asyncio.TimeoutError from an empty fetch
                raise ScanError(f"{bucket}: {pattern} stopped delivering mid-scan") from None
            for msg in messages:
                key = msg.subject[len(prefix) :]
                if msg.headers and msg.headers.get(KV_OPERATION) in ("DEL", "PURGE"):
                    found.pop(key, None)
                else:
                    found[key] = b"" if meta_only else msg.data
                if msg.metadata.num_pending == 0:
                    return list(found.items())
        raise ScanError(f"{bucket}: {pattern} kept changing for {MAX_FETCHES} fetches")
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

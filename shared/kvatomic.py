"""Compare-and-set of several keys of one KV bucket at once (JetStream atomic batch publish).

A KV bucket is a stream (`KV_<bucket>`, subjects `$KV.<bucket>.<key>`). With `allow_atomic` on
that stream, nats-server (2.12+) stores a batch of messages all together or not at all, and
checks `Nats-Expected-Last-Subject-Sequence` on each of them: so a batch of writes, each
expecting the revision its writer read, is a multi-key compare-and-set. A batch never committed
(the writer crashed half-way) is discarded by the server: no key changes.

A batch can also check a key it does not write (a guard): with
`Nats-Expected-Last-Subject-Sequence-Subject: $KV.<bucket>.<key>` (nats-server 2.11+) the
expectation of a message applies to that key instead of its own, so a message written without
an expectation of its own carries the guard; a failed guard fails the whole batch.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from shared.kvscan import scan

T = TypeVar("T")

WRONG_LAST_SEQUENCE = 10071
"""JetStream API error code: an expected last subject sequence did not match."""
TOO_MANY_INFLIGHT = 10210
"""JetStream API error code: the stream holds as many open batches as it allows (50 by default);
nothing of this batch was stored, so it is retried like a lost race."""


class AtomicWriteError(RuntimeError):
    """The server refused a batch for a reason other than a lost compare-and-set."""


class GuardError(ValueError):
    """A batch asked to guard keys it cannot: no written key free to carry the check."""


class AtomicConflictError(RuntimeError):
    """Too many concurrent writers on these keys; the caller's message will be redelivered."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's value as read (None when absent) and the revision a write must expect (0: none)."""

    value: bytes | None
    revision: int


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What a decision returns: the writes to make together (key -> new value) and its result."""

    writes: Mapping[str, bytes | None]
    """None deletes the key (a KV delete marker)."""
    result: T


Decide = Callable[[Mapping[str, Entry]], Outcome[T]]
"""Given the current entries of the keys read, the writes to make (possibly none) and a result."""
Pause = Callable[[int], Awaitable[None]]


class AtomicKv:
    """Multi-key compare-and-set on one KV bucket, whose stream has `allow_atomic` set."""

    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        connection: Callable[[], Client],
        bucket: str,
        *,
        max_attempts: int = 200,
        between_writes: Pause | None = None,
    ) -> None:
        self._kv = kv
        self._connection = connection
        self._bucket = bucket
        self._prefix = f"$KV.{bucket}."
        self._max_attempts = max_attempts
        # A test seam: awaited after each message of a batch but the last (the commit), so a
        # test can kill the writer half-way through a batch.
        self._between_writes = between_writes

    async def read(self, keys: Sequence[str]) -> dict[str, Entry]:
        kv = await self._kv()

        async def one(key: str) -> Entry:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError as exc:
                # A deleted key's last message is its delete marker (nats-py passes it along in
                # the error): a write must expect that revision, not 0.
                deleted = getattr(exc, "entry", None)
                return Entry(None, (deleted.revision or 0) if deleted is not None else 0)
            return Entry(entry.value or None, entry.revision or 0)

        entries = await asyncio.gather(*(one(k) for k in keys))
        return dict(zip(keys, entries, strict=True))

    async def transact(self, keys: Sequence[str], decide: Decide[T]) -> T:
        """Read `keys`, decide, write every decided key expecting the revision read, all or
        nothing; on a lost race read again and decide again."""
        for attempt in range(self._max_attempts):
            entries = await self.read(keys)
            outcome = decide(entries)
            if not outcome.writes:
                return outcome.result
            unknown = set(outcome.writes) - set(entries)
            if unknown:
                raise ValueError(f"decided writes to keys it did not read: {sorted(unknown)}")
            expected = {k: entries[k].revision for k in outcome.writes}
            if await self.write(outcome.writes, expected):
                return outcome.result
            # Lost to a concurrent writer: back off a little, with jitter, so that many
            # contenders on one hot key (a global budget) do not retry in lockstep.
            await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # noqa: S311
        raise AtomicConflictError(f"{len(keys)} keys still contended after {attempt + 1} tries")

    async def write(
        self,
        writes: Mapping[str, bytes | None],
        expected: Mapping[str, int],
        guards: Mapping[str, int] | None = None,
    ) -> bool:
        """Store all `writes` or none; False when some key's revision is no longer `expected`
        (a key missing from `expected` is written whatever its revision), or some key of
        `guards` (checked, not written) is no longer at its revision, or the server has too
        many batches open to take this one. Each guard rides on a written key without an
        expectation of its own (GuardError when there are not enough of them)."""
        carriers = assign_guards(writes, expected, guards or {})
        nc = self._connection()
        batch = uuid.uuid4().hex
        items = list(writes.items())
        for n, (key, value) in enumerate(items, start=1):
            headers = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(n)}
            if key in expected:
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected[key])
            elif key in carriers:
                guarded, revision = carriers[key]
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = self._prefix + guarded
                headers["Nats-Expected-Last-Subject-Sequence"] = str(revision)
            if value is None:
                headers["KV-Operation"] = "DEL"
            subject = self._prefix + key
            payload = value or b""
            if n == len(items):
                headers["Nats-Batch-Commit"] = "1"
                reply = await nc.request(subject, payload, timeout=5.0, headers=headers)
                return _committed(reply.data)
            if n == 1:
                # The first message is a request: the server answers at once if it refuses the
                # batch (e.g. the stream does not allow atomic publish).
                first = await nc.request(subject, payload, timeout=5.0, headers=headers)
                if first.data:
                    if not _committed(first.data):
                        return False
                    # A plain publish ack: the server stored this message on its own, outside
                    # any batch. Never go on as if the writes were atomic.
                    raise AtomicWriteError(
                        f"{subject} was stored outside an atomic batch: the stream does not "
                        "allow atomic publish (nats-server 2.12+ with allow_atomic is needed)"
                    )
            else:
                await nc.publish(subject, payload, headers=headers)
            if self._between_writes is not None:
                await self._between_writes(n)
        return True  # no writes

    async def scan(self, pattern: str) -> list[tuple[str, bytes]]:
        """Current values of the keys matching a subject pattern (filtered by the server)."""
        return await scan(self._connection().jetstream(), self._bucket, pattern)


class AtomicStore(Protocol):
    """What AtomicKv offers (tests use an in-memory one)."""

    async def read(self, keys: Sequence[str]) -> dict[str, Entry]: ...

    async def transact(self, keys: Sequence[str], decide: Decide[T]) -> T: ...

    async def write(
        self,
        writes: Mapping[str, bytes | None],
        expected: Mapping[str, int],
        guards: Mapping[str, int] | None = None,
    ) -> bool: ...

    async def scan(self, pattern: str) -> list[tuple[str, bytes]]: ...


def assign_guards(
    writes: Mapping[str, bytes | None], expected: Mapping[str, int], guards: Mapping[str, int]
) -> dict[str, tuple[str, int]]:
    """Which written key carries which guard (written key -> (guarded key, revision)): a
    message holds one expectation, so each guard takes a written key expecting nothing."""
    written = set(writes) & set(guards)
    if written:
        raise GuardError(f"guarded keys are also written (expect them instead): {sorted(written)}")
    free = [k for k in writes if k not in expected]
    if len(free) < len(guards):
        raise GuardError(
            f"{len(guards)} guards need as many written keys without an expectation; "
            f"this batch has {len(free)}"
        )
    return dict(zip(free, guards.items(), strict=False))


def _committed(data: bytes) -> bool:
    try:
        answer: Any = json.loads(data)
    except ValueError:
        raise AtomicWriteError(f"unreadable batch answer: {data[:200]!r}") from None
    error = answer.get("error") if isinstance(answer, dict) else None
    if error is None:
        return True
    if isinstance(error, dict) and error.get("err_code") in (
        WRONG_LAST_SEQUENCE,
        TOO_MANY_INFLIGHT,
    ):
        return False
    raise AtomicWriteError(f"atomic batch refused: {error}")

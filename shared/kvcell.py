"""Shared single-key state in a KV bucket (a rate, learned durations), changed by compare-and-set
at the cost of about one write per change and next to no reads.

Each process remembers, per key, the revision and value it last read or wrote, and makes its
next compare-and-set against that without reading: with one writer the guess is always right;
when another process wrote meanwhile the write loses, and the key is read again and the change
decided again. A decision to write nothing is never taken on a remembered value, only on one
just read. Changes asked while a write of the same key is under way wait for it and then go
together, in order, in one write (a group commit): under load one write carries many changes.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.jobstore import StoreConflictError, read_revision

S = TypeVar("S")
T = TypeVar("T")
Change = Callable[[S | None], tuple[S | None, T]]
"""Given the current value (None: absent), the new value (None: unchanged) and a result."""


class CellConflictError(StoreConflictError):
    """Too many concurrent writers on one key; the caller retries later."""


class KvCells(Generic[S]):
    """Compare-and-set of single keys of one bucket whose values decode to `S`."""

    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        decode: Callable[[str, bytes | None], S | None],
        encode: Callable[[S], bytes],
        *,
        max_attempts: int = 64,
    ) -> None:
        self._kv = kv
        self._decode = decode
        self._encode = encode
        self._max_attempts = max_attempts
        self._known: dict[str, tuple[int, S | None]] = {}
        """Per key: the revision and value this process last read or wrote."""
        self._queued: dict[str, list[tuple[Change[S, Any], asyncio.Future[object]]]] = {}
        self._writing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def change(self, key: str, change: Change[S, T]) -> T:
        """Apply `change` to `key` atomically (with any others asked meanwhile); its result."""
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append((change, done))
        if key not in self._writing:
            self._writing.add(key)
            task = asyncio.create_task(self._drain(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return cast("T", await done)

    async def _drain(self, key: str) -> None:
        try:
            while batch := self._queued.pop(key, []):
                try:
                    results = await self._commit(key, [c for c, _ in batch])
                except Exception as exc:  # every change of the batch failed with it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)
        finally:
            self._writing.discard(key)

    async def _commit(self, key: str, changes: list[Change[S, Any]]) -> list[Any]:
        """One compare-and-set of `key` carrying every change of `changes`, in order."""
        kv = await self._kv()
        guess = self._known.get(key)
        for attempt in range(self._max_attempts):
            if guess is None:
                revision, current = await self._read(kv, key)
                read = True
            else:
                (revision, current), read = guess, False
            guess = None
            value, results = current, []
            for change in changes:
                new, result = change(value)
                value = value if new is None else new
                results.append(result)
            if value is None or value == current:
                if not read:
                    continue  # nothing to write, decided on a remembered value: read again
                self._known[key] = (revision, current)
                return results  # unchanged: no write
            try:
                if revision == 0:
                    written = await kv.create(key, self._encode(value))
                else:
                    written = await kv.update(key, self._encode(value), last=revision)
            except KeyWrongLastSequenceError:
                self._known.pop(key, None)
                if read:  # a concurrent writer elsewhere: back off a little, jittered
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
                continue
            self._known[key] = (written, value)
            return results
        raise CellConflictError(f"could not update {key} after {self._max_attempts} attempts")

    async def _read(self, kv: KeyValue, key: str) -> tuple[int, S | None]:
        """The value and its revision (0: never written; a deleted key's marker's)."""
        revision, value = await read_revision(kv, key)
        return revision, self._decode(key, value)

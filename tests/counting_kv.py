"""A KV bucket handle that counts the reads and writes going through it (tests of what a step
costs on the wire)."""

from __future__ import annotations

from nats.js.kv import KeyValue


class CountingKv:
    """Wraps a real KeyValue: `get`, `create` and `update` pass through, counted."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.gets = 0
        self.writes = 0

    async def get(self, key: str) -> KeyValue.Entry:
        self.gets += 1
        return await self._kv.get(key)

    async def create(self, key: str, value: bytes) -> int:
        self.writes += 1
        return await self._kv.create(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        self.writes += 1
        return await self._kv.update(key, value, last=last)

    def counts(self) -> tuple[int, int]:
        """(gets, writes) since the last call, and start counting afresh."""
        gets, writes = self.gets, self.writes
        self.gets = self.writes = 0
        return gets, writes

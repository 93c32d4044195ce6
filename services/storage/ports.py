"""What storage needs besides the provider: somewhere to stream assets to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Stored:
    bucket: str
    key: str
    size_bytes: int
    sha256: str


class AssetStore(Protocol):
    async def ensure_bucket(self) -> None: ...

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], content_type: str) -> Stored:
        """Stream `chunks` to `key` in bounded memory; size and sha256 computed on the way."""
        ...

"""What storage's handlers touch: the job store, its emitter, the provider, the asset store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.provider import VideoProvider


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

    async def delete(self, key: str) -> None:
        """Remove `key` (nothing happens when it is absent)."""
        ...


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: VideoProvider
    store: AssetStore

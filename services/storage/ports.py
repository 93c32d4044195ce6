"""What storage's handlers touch: the job store, its emitter, the provider, the asset store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from services.storage.domain import CONCURRENT_STORES
from services.storage.gate import PriorityGate
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.provider import VideoProvider


@dataclass(frozen=True, slots=True)
class Stored:
    bucket: str
    key: str
    size_bytes: int
    sha256: str


class StoreUnavailable(Exception):
    """S3 cannot be reached (connection refused or reset, a timeout, 5xx after the client's
    retries): a job waits for it without spending its error budget. Any other S3 error is an
    ordinary one."""


@dataclass(frozen=True, slots=True)
class ObjectStat:
    size_bytes: int
    metadata: Mapping[str, str]
    """User metadata, names without the x-amz-meta- prefix, lower case."""


class AssetStore(Protocol):
    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
        *,
        length: int | None = None,
    ) -> Stored:
        """Stream `chunks` to `key` in bounded memory, with user `metadata` (x-amz-meta-*);
        size and sha256 computed on the way. `length`, the source's declared length when it
        has one: an object of known length up to a part goes up in one PUT of that
        Content-Length (fewer bytes: an error, nothing stored); the caller checks that the
        bytes add up to it whatever the path. The bucket is created on the first store of the
        process when it does not exist. Nothing is stored when `chunks` raises (its error
        propagates); StoreUnavailable when S3 cannot be reached."""
        ...

    async def stat(self, key: str) -> ObjectStat | None:
        """The object at `key` (its size and user metadata), None when absent (or no bucket);
        StoreUnavailable when S3 cannot be reached."""
        ...

    async def presign(self, key: str, *, internal: bool = False) -> str:
        """A presigned GET URL of `key`, valid for the store's configured lifetime (computed
        locally, no request to S3), on the public S3 URL (or `internal`: the endpoint the
        services use). A credential: never logged."""
        ...

    @property
    def presign_seconds(self) -> int:
        """How long a presigned URL is valid."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key` (nothing happens when it, or the bucket, is absent)."""
        ...


class RetentionMode(StrEnum):
    LIFECYCLE = "lifecycle"
    """The server holds clipline's lifecycle rule and says it expires objects by it."""
    SWEEP = "sweep"
    """The server refused the rule, or took it without saying it applies it: storage sweeps."""


class RetentionStore(Protocol):
    """What the retention task touches (the S3 asset store with a retention set)."""

    @property
    def retention(self) -> RetentionMode | None:
        """How retention is enforced, None until known (S3 not reached yet, or no bucket)."""
        ...

    async def apply_retention(self) -> RetentionMode | None:
        """Write clipline's lifecycle rule into the bucket (keeping every other rule) and find
        out whether the server enforces it. None when the bucket does not exist yet (its first
        use does this); StoreUnavailable when S3 cannot be reached."""
        ...

    async def sweep_expired(self, now: datetime) -> int:
        """Delete the objects of clipline's layout whose retention has passed at `now`;
        returns how many. StoreUnavailable when S3 cannot be reached."""
        ...


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: VideoProvider
    store: AssetStore
    gate: PriorityGate = field(default_factory=lambda: PriorityGate(CONCURRENT_STORES))
    """Stores (downloads and uploads) at once; a freed slot goes to the job whose upstream
    copy expires soonest."""
    delete_upstream: bool = False
    """Once a job is recorded completed, delete the upstream's copy."""

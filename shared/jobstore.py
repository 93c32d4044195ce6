"""The job record store: JetStream KV with compare-and-set, so no concurrent update is lost."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contracts.jobs import JobRecordV1

Change = Callable[[JobRecordV1 | None], JobRecordV1 | None]
"""Given the current record (None if absent), the new record, or None to leave it unchanged."""


class JobStore(Protocol):
    async def get(self, job_id: str) -> JobRecordV1 | None: ...

    async def update(self, job_id: str, change: Change) -> JobRecordV1 | None:
        """Apply `change` atomically; returns the stored record, or None if nothing was written."""
        ...


class StoreConflictError(RuntimeError):
    """Too many concurrent writers on one key; the caller's message will be redelivered."""


class KvJobStore:
    """JobStore on a JetStream KV bucket. Keys are job ids."""

    def __init__(self, kv: Callable[[], Awaitable[KeyValue]], max_attempts: int = 32) -> None:
        self._kv = kv
        self._max_attempts = max_attempts

    async def get(self, job_id: str) -> JobRecordV1 | None:
        kv = await self._kv()
        try:
            entry = await kv.get(job_id)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return JobRecordV1.model_validate_json(entry.value)

    async def update(self, job_id: str, change: Change) -> JobRecordV1 | None:
        kv = await self._kv()
        for _ in range(self._max_attempts):
            try:
                entry = await kv.get(job_id)
                current = JobRecordV1.model_validate_json(entry.value) if entry.value else None
                revision: int | None = entry.revision
            except KeyNotFoundError:
                current, revision = None, None
            new = change(current)
            if new is None:
                return None
            data = new.model_dump_json().encode()
            try:
                if revision is None:
                    await kv.create(job_id, data)
                else:
                    await kv.update(job_id, data, last=revision)
            except KeyWrongLastSequenceError:
                continue  # someone else wrote first: re-read and decide again
            return new
        raise StoreConflictError(f"could not update {job_id} after {self._max_attempts} attempts")


def request_hash(payload: str) -> str:
    """Fingerprint of a normalised request, to tell a retry from a conflicting reuse of a key."""
    return hashlib.sha256(payload.encode()).hexdigest()

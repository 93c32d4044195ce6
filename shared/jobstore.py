"""Job records and the upstream-id index in JetStream KV, changed only by compare-and-set."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared.contracts.events import JobRef
from shared.contracts.jobs import JobRecordV1, record_key
from shared.contracts.lifecycle import IllegalTransition, check_move
from shared.kvscan import scan
from shared.moves import record_move, tag_current
from shared.streams import JOBS_BUCKET

Change = Callable[[JobRecordV1 | None], JobRecordV1 | None]
"""Given the current record (None if absent), the new record, or None to leave it unchanged."""
P = ParamSpec("P")
T = TypeVar("T")


class JobStore(Protocol):
    async def get(self, tenant: str, job_id: str) -> JobRecordV1 | None: ...

    async def update(
        self, tenant: str, job_id: str, change: Change, *, fresh: bool = False
    ) -> JobRecordV1 | None:
        """Apply `change` atomically; returns the stored record, or None if nothing was written.
        `fresh`: a hint that the record is most likely absent (a new job)."""
        ...

    async def list(self, tenant: str) -> list[JobRecordV1]:
        """Every job of one tenant, read from that tenant's keys only."""
        ...


class UpstreamIndex(Protocol):
    """Upstream video id -> job (webhooks and reconciliation carry only the video id)."""

    async def link(self, upstream_id: str, job: JobRef) -> None:
        """Record the owner of `upstream_id`; refuses (UpstreamOwnedError) another job's id."""
        ...

    async def owner(self, upstream_id: str) -> tuple[str, str] | None:
        """(tenant, job_id) owning `upstream_id`, or None."""
        ...


class StoreConflictError(RuntimeError):
    """Too many concurrent writers on one key; the caller's message will be redelivered."""


async def update_key(
    kv: KeyValue,
    key: str,
    decide: Callable[[bytes | None], tuple[bytes | None, T]],
    *,
    max_attempts: int,
) -> T:
    """Compare-and-set of one key: read it, `decide` (the value to write, or None to write
    nothing, and a result), write expecting the revision read; on a lost race back off a
    little (with jitter, so contenders do not retry in lockstep) and decide again."""
    for attempt in range(max_attempts):
        try:
            entry = await kv.get(key)
            value, revision = entry.value or None, entry.revision
        except KeyNotFoundError:
            value, revision = None, None
        data, result = decide(value)
        if data is None:
            return result
        try:
            if revision is None:
                await kv.create(key, data)
            else:
                await kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError:
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
            continue
        return result
    raise StoreConflictError(f"could not update {key} after {max_attempts} attempts")


async def read_revision(kv: KeyValue, key: str) -> tuple[int, bytes | None]:
    """A key's value (None: absent or deleted) and the revision a compare-and-set must expect:
    0 when never written, a deleted key's delete marker's otherwise (nats-py passes it along
    in the error)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError as exc:
        deleted = getattr(exc, "entry", None)
        return (deleted.revision or 0) if deleted is not None else 0, None
    return entry.revision or 0, entry.value or None


class UpstreamOwnedError(RuntimeError):
    """An upstream id is already linked to a different job."""


Decide = Callable[[JobRecordV1 | None], tuple[JobRecordV1 | None, T]]
"""A pure step of a stage: given the current record (None if absent), the record to write
(None: write nothing) and the step's outcome."""


async def apply(jobs: JobStore, job: JobRef, decide: Decide[T]) -> T:
    """One step as one compare-and-set: read the record, `decide`, write what it decided
    expecting the revision read. On a lost race `decide` runs again on the newer record, so
    the outcome returned is always the one decided on the record written (or left)."""
    outcome: list[T] = []

    def change(record: JobRecordV1 | None) -> JobRecordV1 | None:
        new, result = decide(record)
        outcome[:] = [result]
        return new

    await jobs.update(job.tenant, job.job_id, change)
    return outcome[0]


async def advance(
    jobs: JobStore,
    job: JobRef,
    step: Callable[Concatenate[JobRecordV1, datetime, P], JobRecordV1],
    *args: P.args,
    **fields: P.kwargs,
) -> JobRecordV1 | None:
    """Apply a lifecycle step (`advance(jobs, event, admit, cost_micros=c)`) by one
    compare-and-set (one read, at most one write).

    Returns the record when the job is now in the step's target state, by this call or an
    earlier delivery of the same event (so the caller may announce the step again, which the
    fact's event id deduplicates); None when the job is absent or elsewhere (it went on, or
    ended): then the caller must not announce the step."""
    now = datetime.now(UTC)

    def decide(record: JobRecordV1 | None) -> tuple[JobRecordV1 | None, JobRecordV1 | None]:
        if record is None:
            return None, None
        try:
            moved = step(record, now, *args, **fields)
        except IllegalTransition as exc:
            return None, record if record.status == exc.target else None
        return moved, moved

    return await apply(jobs, job, decide)


KNOWN_RECORDS = 4096
"""How many records a KvJobStore remembers (with their revisions) for its next compare-and-set."""


class KvJobStore:
    """JobStore on a JetStream KV bucket. Keys are `<tenant>.<job_id>`.

    A stage reads a record (`get`, to screen the event), works, then changes it (`update`):
    the revision of that read (or of this process's own last write) is remembered, and the
    change's first compare-and-set is made against it, so a step costs one read and one write.
    A remembered record is only ever a guess: a write against it that loses (someone wrote
    since) reads the record again and decides again, and a decision to write nothing is never
    taken on a remembered record, only on one just read. `get` always reads."""

    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        jetstream: Callable[[], JetStreamContext],
        bucket: str = JOBS_BUCKET,
        max_attempts: int = 32,
        known: int = KNOWN_RECORDS,
    ) -> None:
        self._kv = kv
        self._jetstream = jetstream
        self._bucket = bucket
        self._max_attempts = max_attempts
        self._known: OrderedDict[str, tuple[int, JobRecordV1 | None]] = OrderedDict()
        self._known_max = known

    async def get(self, tenant: str, job_id: str) -> JobRecordV1 | None:
        return await self._get(record_key(tenant, job_id))

    async def _get(self, key: str) -> JobRecordV1 | None:
        revision, record = await self._read(await self._kv(), key)
        self._remember(key, revision, record)
        tag_current(record)
        return record

    async def _read(self, kv: KeyValue, key: str) -> tuple[int, JobRecordV1 | None]:
        """The record and its revision (0: never written; a deleted record's marker's)."""
        revision, value = await read_revision(kv, key)
        return revision, JobRecordV1.model_validate_json(value) if value else None

    def _remember(self, key: str, revision: int, record: JobRecordV1 | None) -> None:
        known = self._known.get(key)
        if known is not None and known[0] > revision:
            return  # a read answered after a newer write of ours: keep the newer
        self._known[key] = (revision, record)
        self._known.move_to_end(key)
        while len(self._known) > self._known_max:
            self._known.popitem(last=False)

    async def update(
        self, tenant: str, job_id: str, change: Change, *, fresh: bool = False
    ) -> JobRecordV1 | None:
        """`fresh`: the record is most likely absent (a new job): the first try creates it
        without a read (a record found there after all is read, and decided on, as usual)."""
        key = record_key(tenant, job_id)
        kv = await self._kv()
        guess = (0, None) if fresh else self._known.get(key)
        for attempt in range(self._max_attempts):
            if guess is None:
                revision, current = await self._read(kv, key)
                read = True
            else:
                (revision, current), read = guess, False
            guess = None
            new = change(current)
            if new is None:
                if not read:
                    continue  # nothing to write, on a record not just read: read and decide
                self._remember(key, revision, current)
                tag_current(current)
                return None
            check_move(current, new)
            try:
                if revision == 0:
                    written = await kv.create(key, new.model_dump_json().encode())
                else:
                    written = await kv.update(key, new.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                self._known.pop(key, None)
                if read:  # lost a race with a concurrent writer: back off a little, jittered
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
                continue
            self._remember(key, written, new)
            record_move(current, new)  # once: this write won its compare-and-set
            return new
        raise StoreConflictError(f"could not update {key} after {self._max_attempts} attempts")

    async def list(self, tenant: str) -> list[JobRecordV1]:
        """In one pass over the tenant's keys (their last values), not one read per key."""
        found = await scan(self._jetstream(), self._bucket, f"{tenant}.*")
        return [JobRecordV1.model_validate_json(value) for _, value in found if value]


class KvUpstreamIndex:
    """UpstreamIndex on a KV bucket: key = upstream video id, value = `<tenant>.<job_id>`."""

    def __init__(self, kv: Callable[[], Awaitable[KeyValue]]) -> None:
        self._kv = kv

    async def link(self, upstream_id: str, job: JobRef) -> None:
        kv = await self._kv()
        value = record_key(job.tenant, job.job_id).encode()
        try:
            await kv.create(_index_key(upstream_id), value)
        except KeyWrongLastSequenceError:
            existing = await self.owner(upstream_id)
            if existing != (job.tenant, job.job_id):
                raise UpstreamOwnedError(f"{upstream_id} belongs to {existing}") from None

    async def owner(self, upstream_id: str) -> tuple[str, str] | None:
        kv = await self._kv()
        try:
            entry = await kv.get(_index_key(upstream_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        tenant, _, job_id = entry.value.decode().partition(".")
        return tenant, job_id


def _index_key(upstream_id: str) -> str:
    """KV keys allow [-/_=.a-zA-Z0-9]; upstream ids are `video_<hex>` but are not ours to trust."""
    safe = upstream_id and all(c.isascii() and (c.isalnum() or c in "-_=") for c in upstream_id)
    return upstream_id if safe else "h_" + hashlib.sha256(upstream_id.encode()).hexdigest()


def request_hash(payload: str) -> str:
    """Fingerprint of a normalised request, to tell a retry from a conflicting reuse of a key."""
    return hashlib.sha256(payload.encode()).hexdigest()

"""In-memory fakes of the ports (JobStore, VideoProvider, AssetStore, InputStore, AtomicStore,
ApiKeys) for tests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from services.storage.ports import ObjectStat, Stored, StoreUnavailable
from services.submitter.rates import (
    Granted,
    Limits,
    Priority,
    RateState,
    Wait,
    acquire,
    fresh,
    release,
    throttle,
)
from shared.apikeys import ApiKeyRecord, IssuedKey, digest, issue, revoked, touched
from shared.contracts import JobRecordV1, JobSpec, record_key
from shared.contracts.events import JobRef
from shared.contracts.lifecycle import check_move
from shared.inputs import InputMissingError
from shared.jobstore import Change, UpstreamOwnedError
from shared.kvatomic import Decide, Entry, assign_guards
from shared.moves import record_move
from shared.provider import CreateVideo, UpstreamVideo
from shared.provider.port import Download
from shared.provider.wire import UpstreamError, Variant

T = TypeVar("T")


class InMemoryJobStore:
    """JobStore in a dict keyed `<tenant>.<job_id>`. Records round-trip through JSON, as they
    do through the KV bucket."""

    def __init__(self, records: Iterable[JobRecordV1] = ()) -> None:
        self._data: dict[str, str] = {}
        self.writes: list[str] = []
        for record in records:
            self.put(record)

    def put(self, record: JobRecordV1) -> None:
        """Seed a record directly (test set-up; not counted as a write)."""
        self._data[record_key(record.tenant, record.job_id)] = record.model_dump_json()

    def records(self) -> dict[str, JobRecordV1]:
        """Every record by job id (ids are unique across tenants)."""
        parsed = (JobRecordV1.model_validate_json(v) for v in self._data.values())
        return {r.job_id: r for r in parsed}

    async def get(self, tenant: str, job_id: str) -> JobRecordV1 | None:
        data = self._data.get(record_key(tenant, job_id))
        return None if data is None else JobRecordV1.model_validate_json(data)

    async def update(
        self, tenant: str, job_id: str, change: Change, *, fresh: bool = False
    ) -> JobRecordV1 | None:
        current = await self.get(tenant, job_id)
        new = change(current)
        if new is None:
            return None
        check_move(current, new)
        self._data[record_key(tenant, job_id)] = new.model_dump_json()
        self.writes.append(job_id)
        record_move(current, new)  # as KvJobStore: once per write that moved the job
        return new

    async def list(self, tenant: str) -> list[JobRecordV1]:
        return [r for r in self.records().values() if r.tenant == tenant]


class InMemoryUpstreamIndex:
    """UpstreamIndex in a dict."""

    def __init__(self) -> None:
        self.links: dict[str, tuple[str, str]] = {}

    async def link(self, upstream_id: str, job: JobRef) -> None:
        owner = self.links.setdefault(upstream_id, (job.tenant, job.job_id))
        if owner != (job.tenant, job.job_id):
            raise UpstreamOwnedError(f"{upstream_id} belongs to {owner}")

    async def owner(self, upstream_id: str) -> tuple[str, str] | None:
        return self.links.get(upstream_id)


class InMemoryInputStore:
    """InputStore in a dict; a missing name raises InputMissingError like the object store."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})

    async def put(self, name: str, data: bytes) -> None:
        self.objects[name] = data

    async def get(self, name: str) -> bytes:
        try:
            return self.objects[name]
        except KeyError:
            raise InputMissingError(name) from None


def upstream_video(
    video_id: str = "video_123",
    status: str = "queued",
    *,
    progress: int = 0,
    error: tuple[str, str] | None = None,
    model: str = "sora-2",
    size: str = "1280x720",
    seconds: str = "4",
    took: int | None = None,
) -> UpstreamVideo:
    """An upstream Video object as the provider returns it (`took`: completed that many
    seconds after it was created)."""
    created = int(datetime.now(UTC).timestamp()) - (took or 0)
    return UpstreamVideo(
        id=video_id,
        model=model,
        status=status,
        progress=progress,
        created_at=created,
        completed_at=None if took is None else created + took,
        size=size,
        seconds=seconds,
        error=UpstreamError(code=error[0], message=error[1]) if error else None,
    )


@dataclass
class FakeProvider:
    """VideoProvider with scripted answers (consumed in order; an exception is raised)."""

    creates: list[UpstreamVideo | Exception] = field(default_factory=list)
    retrieves: list[tuple[UpstreamVideo, float | None] | Exception] = field(default_factory=list)
    assets: dict[Variant, bytes] = field(default_factory=dict)
    download_errors: dict[Variant, Exception] = field(default_factory=dict)
    truncations: dict[Variant, list[int]] = field(default_factory=dict)
    """Per variant, how many bytes its next downloads deliver (one a download, in order) while
    declaring the whole length: a connection cut short the way httpx sees it."""
    chunk_size: int = 4
    created: list[CreateVideo] = field(default_factory=list)
    created_videos: list[UpstreamVideo] = field(default_factory=list)
    retrieved: list[str] = field(default_factory=list)
    downloaded: list[tuple[str, Variant]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    delete_errors: list[Exception] = field(default_factory=list)
    """Raised by the next deletes, one each, in order (each still noted in `deleted`)."""
    listed: list[UpstreamVideo] = field(default_factory=list)
    """What `recent` answers (newest first); every create appends its video here too."""
    list_calls: int = 0

    async def create(self, request: CreateVideo) -> UpstreamVideo:
        self.created.append(request)
        if not self.creates:
            raise AssertionError(f"unexpected create: {request}")
        result = self.creates.pop(0)
        if isinstance(result, Exception):
            raise result
        self.listed.insert(0, result)
        self.created_videos.append(result)
        return result

    async def recent(self, limit: int = 100, since: int | None = None) -> list[UpstreamVideo]:
        self.list_calls += 1
        return self.listed if since is not None else self.listed[:limit]

    async def retrieve(self, video_id: str) -> tuple[UpstreamVideo, float | None]:
        self.retrieved.append(video_id)
        if not self.retrieves:
            raise AssertionError(f"unexpected retrieve of {video_id}")
        result = self.retrieves.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    @asynccontextmanager
    async def download(self, video_id: str, variant: Variant) -> AsyncIterator[Download]:
        self.downloaded.append((video_id, variant))
        if variant in self.download_errors:
            raise self.download_errors[variant]
        data = self.assets[variant]
        cuts = self.truncations.get(variant)
        sent = data[: cuts.pop(0)] if cuts else data

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(sent), self.chunk_size):
                yield sent[start : start + self.chunk_size]

        yield Download("application/octet-stream", len(data), chunks())

    async def delete(self, video_id: str) -> None:
        self.deleted.append(video_id)
        if self.delete_errors:
            raise self.delete_errors.pop(0)


@dataclass(frozen=True, slots=True)
class StoredObject:
    data: bytes
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class InMemoryAssetStore:
    """AssetStore in a dict; size and sha256 are computed from the streamed chunks."""

    def __init__(self, bucket: str = "clipline-test") -> None:
        self.bucket = bucket
        self.objects: dict[str, StoredObject] = {}
        self.down = False
        """S3 unreachable: every call raises StoreUnavailable."""

    def _reachable(self) -> None:
        if self.down:
            raise StoreUnavailable("S3 unreachable: ConnectionRefusedError")

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
        *,
        length: int | None = None,
    ) -> Stored:
        digest = hashlib.sha256()
        data = bytearray()
        async for chunk in chunks:  # a source that raises leaves nothing, as a multipart abort
            digest.update(chunk)
            data += chunk
        self._reachable()  # minio sends a small object once it is read whole
        self.objects[key] = StoredObject(bytes(data), content_type, dict(metadata))
        return Stored(bucket=self.bucket, key=key, size_bytes=len(data), sha256=digest.hexdigest())

    async def stat(self, key: str) -> ObjectStat | None:
        self._reachable()
        obj = self.objects.get(key)
        return ObjectStat(len(obj.data), obj.metadata) if obj else None

    async def presign(self, key: str, *, internal: bool = False) -> str:
        host = "s3.internal" if internal else "s3.test"
        return f"https://{host}/{self.bucket}/{key}?X-Amz-Signature=fake"

    @property
    def presign_seconds(self) -> int:
        return 3600

    async def delete(self, key: str) -> None:
        self._reachable()
        self.objects.pop(key, None)


if TYPE_CHECKING:  # mypy checks that each fake satisfies its port
    from services.storage.ports import AssetStore
    from shared.inputs import InputStore
    from shared.jobstore import JobStore, UpstreamIndex
    from shared.provider import VideoProvider

    _jobs: JobStore = InMemoryJobStore()
    _index: UpstreamIndex = InMemoryUpstreamIndex()
    _inputs: InputStore = InMemoryInputStore()
    _provider: VideoProvider = FakeProvider()
    _assets: AssetStore = InMemoryAssetStore()


START_WALL = 1_760_000_000.25


class FakeClock:
    """Both clocks of the simulator, moved forward only by the test."""

    def __init__(self) -> None:
        self.mono = 5_000.0
        self.wall = START_WALL

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class InMemoryAtomicStore:
    """AtomicStore in a dict: per-key revisions from one sequence, as in a KV stream, and the
    same all-or-nothing compare-and-set of several keys."""

    def __init__(self) -> None:
        self.values: dict[str, bytes | None] = {}
        self.revisions: dict[str, int] = {}
        self._seq = 0
        self.conflicts = 0

    async def read(self, keys: Sequence[str]) -> dict[str, Entry]:
        return {k: Entry(self.values.get(k), self.revisions.get(k, 0)) for k in keys}

    async def transact(self, keys: Sequence[str], decide: Decide[T]) -> T:
        for _ in range(50):
            entries = await self.read(keys)
            outcome = decide(entries)
            expected = {k: entries[k].revision for k in outcome.writes}
            if not outcome.writes or await self.write(outcome.writes, expected):
                return outcome.result
        raise AssertionError("in-memory transaction kept conflicting")

    async def write(
        self,
        writes: Mapping[str, bytes | None],
        expected: Mapping[str, int],
        guards: Mapping[str, int] | None = None,
    ) -> bool:
        """As AtomicKv: `guards` are checked like `expected` but not written, each needing a
        written key without an expectation to ride on (GuardError otherwise)."""
        checks = {**expected, **(guards or {})}
        assign_guards(writes, expected, guards or {})
        if any(self.revisions.get(k, 0) != rev for k, rev in checks.items()):
            self.conflicts += 1
            return False
        for key, value in writes.items():
            self._seq += 1
            self.values[key] = value
            self.revisions[key] = self._seq
        return True

    async def scan(self, pattern: str) -> list[tuple[str, bytes]]:
        return [
            (k, v)
            for k, v in sorted(self.values.items())
            if v is not None and subject_matches(pattern, k)
        ]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or token not in ("*", s[i]):
            return False
    return len(p) == len(s)


@dataclass
class InMemoryRates:
    """RateShaper on the pure decisions with one in-memory state per model and a settable
    clock; records what the submitter asked of it."""

    limits: Limits
    now: float = 1000.0
    states: dict[str, RateState] = field(default_factory=dict)
    asked: list[tuple[str, str, str]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    throttled: list[float | None] = field(default_factory=list)

    async def acquire(
        self, model: str, job_id: str, priority: Priority, lease: float
    ) -> Granted | Wait:
        self.asked.append((model, job_id, priority))
        state = self.states.get(model) or fresh(self.now)
        decision = acquire(state, self.limits, self.now, job_id, priority=priority, lease=lease)
        self.states[model] = decision.state
        return decision

    async def release(self, model: str, job_id: str) -> None:
        self.released.append(job_id)
        self.states[model] = release(self.states[model], job_id)

    async def throttle(self, model: str, retry_after: float | None) -> None:
        self.throttled.append(retry_after)
        self.states[model] = throttle(self.states[model], self.now, retry_after, self.limits)


class InMemorySeenWebhooks:
    """SeenWebhooks in a set (the KV bucket's create is the real one's compare-and-set)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.done_ids: set[str] = set()
        self.released: list[str] = []
        self.told_videos: set[str] = set()

    async def claim(self, webhook_id: str) -> bool:
        if webhook_id in self.ids:
            return False
        self.ids.add(webhook_id)
        return True

    async def renew(self, webhook_id: str) -> None:
        return None

    async def done(self, webhook_id: str) -> None:
        self.done_ids.add(webhook_id)

    async def release(self, webhook_id: str) -> None:
        self.ids.discard(webhook_id)
        self.released.append(webhook_id)

    async def tell(self, video_id: str) -> None:
        self.told_videos.add(video_id)

    async def told(self, video_id: str) -> bool:
        return video_id in self.told_videos


@dataclass
class FixedExpectations:
    """Expectations: every job expected done `seconds` after submission; what was learned is
    kept in `learned` (spec, took)."""

    seconds: float
    learned: list[tuple[JobSpec, str, float]] = field(default_factory=list)

    async def expected(self, spec: JobSpec) -> float:
        return self.seconds

    async def finished(self, spec: JobSpec, video_id: str, took: float) -> None:
        self.learned.append((spec, video_id, took))


def test_key(tenant: str) -> str:
    """A well-formed key fixed per tenant (tests name it before any store exists)."""
    key_id = hashlib.sha256(f"id:{tenant}".encode()).hexdigest()[:16]
    return f"ck_{key_id}_{hashlib.sha256(f'secret:{tenant}'.encode()).hexdigest()[:43]}"


def bearer(tenant: str) -> dict[str, str]:
    """The Authorization header of `tenant`'s test key."""
    return {"Authorization": f"Bearer {test_key(tenant)}"}


class InMemoryApiKeys:
    """ApiKeys in a dict by key id; `touches` counts the last_used_at writes."""

    def __init__(self, tenants: Iterable[str] = ()) -> None:
        self.records: dict[str, ApiKeyRecord] = {}
        self.touches = 0
        for tenant in tenants:
            self.seed(tenant)

    def seed(self, tenant: str) -> str:
        """Store `tenant`'s test key (test set-up); returns it."""
        key = test_key(tenant)
        _, key_id, secret = key.split("_", 2)
        self.records[key_id] = ApiKeyRecord(
            id=key_id, tenant=tenant, name="test", secret_sha256=digest(secret),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )  # fmt: skip
        return key

    async def create(self, tenant: str, name: str, now: datetime) -> IssuedKey:
        issued = issue(tenant, name, now)
        self.records[issued.record.id] = issued.record
        return issued

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        return self.records.get(key_id)

    async def revoke(self, key_id: str, now: datetime) -> ApiKeyRecord | None:
        new = revoked(self.records.get(key_id), now)
        if new is not None:
            self.records[key_id] = new
        return self.records.get(key_id)

    async def revoke_tenant(self, tenant: str, now: datetime) -> list[ApiKeyRecord]:
        done = [await self.revoke(r.id, now) for r in await self.list(tenant) if not r.revoked_at]
        return [r for r in done if r is not None]

    async def touch(self, key_id: str, now: datetime) -> None:
        new = touched(self.records.get(key_id), now)
        if new is not None:
            self.records[key_id] = new
            self.touches += 1

    async def list(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        mine = [r for r in self.records.values() if tenant is None or r.tenant == tenant]
        return sorted(mine, key=lambda r: (r.created_at, r.id))


if TYPE_CHECKING:
    from shared.apikeys import ApiKeys

    _keys: ApiKeys = InMemoryApiKeys()

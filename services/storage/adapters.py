"""S3 asset store on the minio SDK (SeaweedFS, MinIO or AWS): streamed multipart uploads."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import queue
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, TypeVar, cast

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from opentelemetry.trace import SpanKind

from services.storage.domain import (
    RETENTION_RULE_ID,
    RuleView,
    expires_by_rule,
    retention_due,
    retention_rule_held,
    with_retention_rule,
)
from services.storage.ports import ObjectStat, RetentionMode, Stored, StoreUnavailable
from services.storage.s3http import BUSY_CODES, S3Puts, S3RequestError
from shared import metrics
from shared.telemetry import short_span

_END = b""
_QUEUE_CHUNKS = 4  # chunks buffered between download and upload: memory stays bounded
_PARALLEL_PARTS = 2
"""Parts uploaded at once. minio's default of 3 holds three parts (and their copies) in memory
per upload; the download feeding it is the slower side anyway (bench.storage_stream)."""
_POLL_SECONDS = 0.5
_META = "x-amz-meta-"
_ABSENT = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})
_BUCKET_EXISTS = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_REDIRECTED = frozenset({301, 302, 307, 308})
_ELSEWHERE = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "TemporaryRedirect"})
_PROBE_PREFIX = ".clipline/retention-probe/"
"""Where the lifecycle check writes (and at once deletes) an empty object: outside clipline's
key layout, under the rule (which covers the whole bucket)."""
_DELETE_BATCH = 1000  # S3's DeleteObjects limit
T = TypeVar("T")
log = logging.getLogger("clipline.storage")
_TRACER = "clipline.storage.s3"
_S3_CODE = re.compile(r"[A-Za-z]{1,40}")


def s3_error_reason(exc: BaseException) -> str | None:
    """The reason label of an S3 request's failure (S3's error code, `unavailable` for an
    outage); None when the failure was not S3's (the source stream broke)."""
    if isinstance(exc, StoreUnavailable):
        return "unavailable"
    if isinstance(exc, S3RequestError | S3Error):
        code = exc.code
        if code and _S3_CODE.fullmatch(code):
            return code
        return f"http_{exc.status}" if isinstance(exc, S3RequestError) else "other"
    return None


def s3_http_client(
    *, connect_seconds: float = 5.0, read_seconds: float = 60.0
) -> urllib3.PoolManager:
    """minio's own pool, but with timeouts that find an S3 that stopped answering in seconds
    (minio's default is 5 minutes per attempt), so a job starts waiting for it soon."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_seconds, read=read_seconds),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


def _rule_id(rule: Rule) -> str | None:
    return rule.rule_id


def _rule_view(rule: Rule) -> RuleView:
    prefix = rule.rule_filter.prefix if rule.rule_filter is not None else None
    days = rule.expiration.days if rule.expiration is not None else None
    return RuleView(rule.rule_id, rule.status == ENABLED, prefix, days)


def unreachable(exc: BaseException) -> bool:
    """Whether an error of the minio client means S3 cannot be reached (now): a connection
    refused, reset or timed out (urllib3, after its retries), a 5xx, or S3 saying it is busy."""
    if isinstance(exc, UploadAbortedError):
        return False  # our own source failed, not S3
    if isinstance(exc, S3Error):
        return exc.code in BUSY_CODES
    return isinstance(exc, ServerError | urllib3.exceptions.HTTPError | OSError)


async def _s3(call: Callable[[], T]) -> T:
    """Run a blocking minio call in a thread, S3 being unreachable raised as StoreUnavailable."""
    try:
        return await asyncio.to_thread(call)
    except Exception as exc:
        if unreachable(exc):
            raise StoreUnavailable(f"S3 unreachable: {type(exc).__name__}: {exc}"[:500]) from exc
        raise


class UploadAbortedError(ConnectionAbortedError):
    """The source stream failed or was cancelled; minio aborts the multipart upload on it."""


class _QueueReader:
    """A blocking file-like `read(n)` over chunks fed from the event loop (bounded queue)."""

    def __init__(self, q: queue.Queue[bytes], aborted: threading.Event) -> None:
        self._q = q
        self._aborted = aborted
        self._buf = bytearray()
        self._done = False

    def _next(self) -> bytes:
        while True:
            if self._aborted.is_set():
                raise UploadAbortedError("source stream failed")
            try:
                return self._q.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            item = self._next()
            if item == _END:
                self._done = True
                break
            self._buf += item
        size = len(self._buf) if n < 0 else min(n, len(self._buf))
        with memoryview(self._buf) as view:  # one copy of the part, not two
            out = bytes(view[:size])
        del self._buf[:size]
        return out


class S3AssetStore:
    """The bucket is created on first use (the first store), not at start: storage starts, and
    takes its other work, while S3 is down; a store then waits for S3 like any other.

    With `puts`, an object of known length up to one part goes up in one streamed PUT on the
    event loop (services/storage/s3http.py); any other through minio's multipart upload."""

    def __init__(
        self,
        client: Minio,
        bucket: str,
        part_size: int,
        presign_seconds: int = 3600,
        *,
        puts: S3Puts | None = None,
        retention_days: int = 0,
    ) -> None:
        self._client = client
        self._puts = puts
        self._bucket = bucket
        self._part_size = max(part_size, 5 * 1024 * 1024)  # S3's minimum part size
        self._presign = timedelta(seconds=presign_seconds)
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()
        self._retention_days = retention_days
        self._retention: RetentionMode | None = None

    async def presign(self, key: str, *, internal: bool = False) -> str:
        # Local: signed with the configured region, so no request (and no thread). Where minio
        # stores (no `puts`, or an endpoint that refused them), minio signs as it addresses
        # (the services' endpoint: a public URL needs `puts`, as storage's __main__ gives).
        if self._puts is not None:
            seconds = int(self._presign.total_seconds())
            now = datetime.now(UTC)
            return self._puts.presign(self._bucket, key, seconds, now, internal=internal)
        return self._client.presigned_get_object(self._bucket, key, expires=self._presign)

    @property
    def presign_seconds(self) -> int:
        return int(self._presign.total_seconds())

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists, once per process (per store): later calls cost
        nothing. Another replica creating it meanwhile is fine; StoreUnavailable when S3 cannot
        be reached (and the next call tries again)."""
        if self._bucket_ready:
            return
        async with self._bucket_lock:  # concurrent first stores ask S3 once
            if not self._bucket_ready:
                await _s3(self._make_bucket)
                self._bucket_ready = True
                await self._retention_on_first_use()

    def _make_bucket(self) -> None:
        if self._client.bucket_exists(self._bucket):  # a key without CreateBucket still works
            return
        try:
            self._client.make_bucket(self._bucket)
        except S3Error as exc:
            if exc.code not in _BUCKET_EXISTS:  # created by another replica since the check
                raise

    # Retention (CLIPLINE_S3_RETENTION_DAYS > 0): the decisions are in domain.py.

    @property
    def retention(self) -> RetentionMode | None:
        return self._retention

    async def _retention_on_first_use(self) -> None:
        """Write the lifecycle rule along with the bucket's first use; a failure is logged and
        the store goes on (the retention task tries again)."""
        if self._retention_days <= 0 or self._retention is not None:
            return
        try:
            await self.apply_retention()
        except Exception as exc:  # retention never fails a store
            log.warning("storage: retention: cannot write the lifecycle rule yet: %s", exc)

    async def apply_retention(self) -> RetentionMode | None:
        if self._retention_days <= 0:
            return None
        mode = await _s3(self._apply_lifecycle)
        if mode is not None and mode != self._retention:
            log.info(
                "storage: retention of %d day(s) on bucket %s: %s",
                self._retention_days,
                self._bucket,
                "S3 lifecycle rule " + RETENTION_RULE_ID
                if mode is RetentionMode.LIFECYCLE
                else "swept by storage",
            )
        self._retention = mode
        return mode

    def _apply_lifecycle(self) -> RetentionMode | None:
        if not self._client.bucket_exists(self._bucket):
            return None  # nothing stored yet: the first store makes the bucket and comes here
        ours = Rule(
            ENABLED,
            rule_filter=Filter(prefix=""),
            rule_id=RETENTION_RULE_ID,
            expiration=Expiration(days=self._retention_days),
        )
        try:
            current = self._client.get_bucket_lifecycle(self._bucket)  # None: no rules
            rules = with_retention_rule(current.rules if current else [], ours, _rule_id)
            self._client.set_bucket_lifecycle(self._bucket, LifecycleConfig(rules))
            held = self._client.get_bucket_lifecycle(self._bucket)
        except S3Error as exc:
            if exc.code in BUSY_CODES:
                raise
            log.warning(
                "storage: retention: S3 refused the lifecycle rule (%s): storage sweeps", exc.code
            )
            return RetentionMode.SWEEP
        if held is None or not retention_rule_held(
            map(_rule_view, held.rules), self._retention_days
        ):
            log.warning(
                "storage: retention: S3 accepted the lifecycle rule but does not return it: "
                "storage sweeps"
            )
            return RetentionMode.SWEEP
        try:
            applied = self._expires_by_our_rule()
        except S3Error as exc:
            if exc.code in BUSY_CODES:
                raise  # S3 unreachable for now: the next pass tries again
            log.warning("storage: retention: cannot probe the lifecycle rule (%s): storage sweeps",
                        exc.code)  # fmt: skip
            return RetentionMode.SWEEP
        if not applied:
            log.warning(
                "storage: retention: S3 holds the lifecycle rule but does not say it expires "
                "objects by it (no x-amz-expiration): storage sweeps"
            )
            return RetentionMode.SWEEP
        return RetentionMode.LIFECYCLE

    def _expires_by_our_rule(self) -> bool:
        """Write an empty probe object and read its `x-amz-expiration` (on the PUT answer, else
        a HEAD), then delete it: a server applying the rule names it there."""
        key = f"{_PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            written = self._client.put_object(self._bucket, key, io.BytesIO(b""), 0)
            header = written.http_headers.get("x-amz-expiration")
            if header is None:
                stat = self._client.stat_object(self._bucket, key)
                header = (stat.metadata or {}).get("x-amz-expiration")
        finally:
            self._client.remove_object(self._bucket, key)
        return expires_by_rule(header)

    async def sweep_expired(self, now: datetime) -> int:
        if self._retention_days <= 0:
            return 0
        return await _s3(lambda: self._sweep(now))

    def _sweep(self, now: datetime) -> int:
        try:
            due = [
                obj.object_name
                for obj in self._client.list_objects(self._bucket, recursive=True)
                if obj.object_name and retention_due(obj.object_name, self._retention_days, now)
            ]
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return 0  # nothing stored yet
            raise
        deleted = 0
        for start in range(0, len(due), _DELETE_BATCH):
            batch = due[start : start + _DELETE_BATCH]
            failed = [
                e
                for e in self._client.remove_objects(self._bucket, map(DeleteObject, batch))
                if e.code not in _ABSENT  # deleted meanwhile (another replica): fine
            ]
            if failed:
                log.warning(
                    "storage: retention: %d object(s) not deleted, e.g. %s: %s",
                    len(failed),
                    failed[0].name,
                    failed[0].code,
                )
            deleted += len(batch) - len(failed)
        return deleted

    async def delete(self, key: str) -> None:
        try:
            await _s3(lambda: self._client.remove_object(self._bucket, key))
        except S3Error as exc:
            if exc.code != "NoSuchBucket":  # no bucket yet: nothing stored to delete
                raise

    async def stat(self, key: str) -> ObjectStat | None:
        try:
            obj = await _s3(lambda: self._client.stat_object(self._bucket, key))
        except S3Error as exc:
            if exc.code in _ABSENT:
                return None
            raise
        headers = obj.metadata or {}
        metadata = {
            name.lower().removeprefix(_META): value
            for name, value in headers.items()
            if name.lower().startswith(_META)
        }
        return ObjectStat(obj.size if obj.size is not None else -1, metadata)

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
        *,
        length: int | None = None,
    ) -> Stored:
        attributes: dict[str, str | int] = {
            "rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": "PutObject",
            "http.request.method": "PUT", "aws.s3.bucket": self._bucket, "aws.s3.key": key,
        }  # fmt: skip
        with short_span(_TRACER, "S3.PutObject", attributes, kind=SpanKind.CLIENT) as span:
            try:
                await self.ensure_bucket()
                if self._puts is not None and length is not None and length <= self._part_size:
                    stored = await self._put_small(key, chunks, length, content_type, metadata)
                else:
                    stored = await self._put_multipart(key, chunks, content_type, metadata)
            except Exception as exc:
                if (reason := s3_error_reason(exc)) is not None:
                    metrics.S3_ERRORS.add(1, {"operation": "put", "reason": reason})
                raise
            span.set_attribute("clipline.s3.bytes", stored.size_bytes)
            metrics.S3_TRANSFERRED.add(stored.size_bytes, {"operation": "put"})
            return stored

    async def _put_small(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        length: int,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> Stored:
        assert self._puts is not None
        digest = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                digest.update(chunk)
                yield chunk

        try:
            await self._puts.put(
                self._bucket, key, hashed(), length=length, content_type=content_type,
                metadata=metadata,
            )  # fmt: skip
        except S3RequestError as exc:
            if exc.code == "NoSuchBucket":  # removed since it was made: make it again next time
                self._bucket_ready = False
                self._retention = None  # and give the new bucket its lifecycle rule
            elif exc.status in _REDIRECTED or exc.code in _ELSEWHERE:
                # An endpoint that wants virtual-host requests or another region (AWS): minio
                # finds both out by itself, so it stores everything from now on.
                log.warning("storage: S3 refused a single PUT (%s): minio stores all objects "
                            "from now on", exc)  # fmt: skip
                self._puts = None
            raise
        return Stored(self._bucket, key, length, digest.hexdigest())

    async def _put_multipart(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
    ) -> Stored:
        q: queue.Queue[bytes] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        aborted = threading.Event()
        digest = hashlib.sha256()
        size = 0
        upload = asyncio.create_task(
            asyncio.to_thread(
                self._client.put_object,
                self._bucket,
                key,
                cast("BinaryIO", _QueueReader(q, aborted)),
                length=-1,
                part_size=self._part_size,
                num_parallel_uploads=_PARALLEL_PARTS,
                content_type=content_type,
                metadata=dict(metadata),
            )
        )

        async def feed(item: bytes) -> None:
            while True:
                if upload.done():
                    await upload  # the upload ended early: raise its error, stop downloading
                    raise UploadAbortedError("upload ended before its input")
                try:
                    q.put_nowait(item)
                    return
                except queue.Full:
                    await asyncio.sleep(0.005)  # backpressure from a slower S3, not a sync wait

        try:
            async for chunk in chunks:
                if chunk:
                    digest.update(chunk)
                    size += len(chunk)
                    await feed(chunk)
            await feed(_END)
            await upload
        except BaseException as exc:
            # Failure or cancellation: stop the thread (it aborts the multipart upload) and
            # wait for it, so no thread outlives the handler.
            aborted.set()
            await asyncio.shield(asyncio.gather(upload, return_exceptions=True))
            failed = upload.done() and not upload.cancelled() and upload.exception() is exc
            if failed and unreachable(exc):  # S3's error, not the source's
                raise StoreUnavailable(
                    f"S3 unreachable: {type(exc).__name__}: {exc}"[:500]
                ) from exc
            raise
        return Stored(self._bucket, key, size, digest.hexdigest())

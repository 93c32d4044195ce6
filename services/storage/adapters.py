"""S3 asset store on the minio SDK (SeaweedFS, MinIO or AWS): streamed multipart uploads."""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
from collections.abc import AsyncIterator, Mapping
from typing import BinaryIO, cast

from minio import Minio
from minio.error import S3Error

from services.storage.ports import ObjectStat, Stored

_END = b""
_QUEUE_CHUNKS = 4  # chunks buffered between download and upload: memory stays bounded
_POLL_SECONDS = 0.5
_META = "x-amz-meta-"
_ABSENT = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


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
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out


class S3AssetStore:
    def __init__(self, client: Minio, bucket: str, part_size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._part_size = max(part_size, 5 * 1024 * 1024)  # S3's minimum part size

    async def ensure_bucket(self) -> None:
        def make() -> None:
            if not self._client.bucket_exists(self._bucket):
                self._client.make_bucket(self._bucket)

        await asyncio.to_thread(make)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.remove_object, self._bucket, key)

    async def stat(self, key: str) -> ObjectStat | None:
        try:
            obj = await asyncio.to_thread(self._client.stat_object, self._bucket, key)
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
        except BaseException:
            # Failure or cancellation: stop the thread (it aborts the multipart upload) and
            # wait for it, so no thread outlives the handler.
            aborted.set()
            await asyncio.shield(asyncio.gather(upload, return_exceptions=True))
            raise
        return Stored(self._bucket, key, size, digest.hexdigest())

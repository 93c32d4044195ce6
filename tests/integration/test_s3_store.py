"""Streamed uploads into a real S3 (SeaweedFS): multipart, checksums, failures propagate."""

import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from minio import Minio

from clipline.servers import S3Server
from services.storage.adapters import S3AssetStore

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def client(s3: S3Server) -> Minio:
    return Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_multipart_stream_roundtrip(s3_server: S3Server) -> None:
    store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", part_size=5 * MiB)
    await store.ensure_bucket()
    await store.ensure_bucket()  # idempotent
    data = os.urandom(12 * MiB + 123)  # three parts
    key = "acme/2026/12/02/job_1/video.mp4"
    metadata = {"job-id": "job_1", "tenant": "acme", "cost-micros": "400000"}
    stored = await store.put_stream(key, chunks(data, 1 * MiB), "video/mp4", metadata)
    assert stored.key == key
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    obj = client(s3_server).get_object(stored.bucket, stored.key)
    try:
        assert obj.read() == data
        assert obj.headers["Content-Type"] == "video/mp4"
        assert obj.headers["x-amz-meta-job-id"] == "job_1"
    finally:
        obj.close()
        obj.release_conn()
    stat = await store.stat(key)
    assert stat is not None
    assert stat.size_bytes == len(data)
    assert stat.metadata == metadata
    assert await store.stat("acme/2026/12/02/job_1/absent.mp4") is None


async def test_broken_source_fails_the_upload(s3_server: S3Server) -> None:
    store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", part_size=5 * MiB)
    await store.ensure_bucket()

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        raise ConnectionError("upstream went away")

    with pytest.raises(ConnectionError):
        await store.put_stream("acme/job_2/video.mp4", broken(), "video/mp4", {})
    names = [o.object_name for o in client(s3_server).list_objects(store._bucket, recursive=True)]
    assert "acme/job_2/video.mp4" not in names

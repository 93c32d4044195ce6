"""Streamed uploads into a real S3 (SeaweedFS): multipart, checksums, failures propagate."""

import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from minio import Minio

from clipline.servers import S3Server
from services.storage.adapters import S3AssetStore, s3_http_client
from services.storage.ports import StoreUnavailable

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


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_s3_is_store_unavailable() -> None:
    down = Minio(
        f"127.0.0.1:{closed_port()}", access_key="k", secret_key="s", secure=False,
        http_client=s3_http_client(connect_seconds=1, read_seconds=1),
    )  # fmt: skip
    store = S3AssetStore(down, "clipline-assets", part_size=5 * MiB)
    with pytest.raises(StoreUnavailable):
        await store.stat("acme/2026/12/02/job_3/video.mp4")
    with pytest.raises(StoreUnavailable):
        await store.put_stream(
            "acme/2026/12/02/job_3/video.mp4", chunks(b"x" * 10, 4), "video/mp4", {}
        )


async def test_a_source_error_is_not_store_unavailable(s3_server: S3Server) -> None:
    store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", part_size=5 * MiB)
    await store.ensure_bucket()

    async def refused() -> AsyncIterator[bytes]:
        yield b"x"
        raise ConnectionRefusedError("the upstream, not S3")

    with pytest.raises(ConnectionRefusedError):
        await store.put_stream("acme/job_4/video.mp4", refused(), "video/mp4", {})


async def test_presigned_url_serves_the_object_for_its_lifetime(s3_server: S3Server) -> None:
    store = S3AssetStore(
        client(s3_server), f"b-{uuid.uuid4().hex[:12]}", part_size=5 * MiB, presign_seconds=600
    )
    await store.ensure_bucket()
    data = os.urandom(1000)
    stored = await store.put_stream(
        "acme/2026/12/02/job_5/video.mp4", chunks(data, 300), "video/mp4", {}
    )
    url = await store.presign(stored.key)
    assert "X-Amz-Expires=600" in url
    async with httpx.AsyncClient() as http:
        got = await http.get(url)
        assert got.status_code == 200
        assert got.content == data
        forged = await http.get(url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"))
        assert forged.status_code == 403  # the signature covers the lifetime

"""Streamed uploads into a real S3 (SeaweedFS): multipart, checksums, failures propagate."""

import asyncio
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

    async def refused() -> AsyncIterator[bytes]:
        yield b"x"
        raise ConnectionRefusedError("the upstream, not S3")

    with pytest.raises(ConnectionRefusedError):
        await store.put_stream("acme/job_4/video.mp4", refused(), "video/mp4", {})


async def test_presigned_url_serves_the_object_for_its_lifetime(s3_server: S3Server) -> None:
    store = S3AssetStore(
        client(s3_server), f"b-{uuid.uuid4().hex[:12]}", part_size=5 * MiB, presign_seconds=600
    )
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


class CountingMinio(Minio):
    """Minio noting its bucket calls; `blind` makes it never see an existing bucket (another
    replica's make_bucket landing between its check and its own)."""

    def __init__(self, s3: S3Server, *, blind: bool = False) -> None:
        super().__init__(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                         secure=False)  # fmt: skip
        self.blind = blind
        self.calls: list[str] = []

    def bucket_exists(self, bucket_name: str) -> bool:
        self.calls.append("exists")
        return False if self.blind else super().bucket_exists(bucket_name)

    def make_bucket(self, bucket_name: str, *args: object, **kwargs: object) -> None:
        self.calls.append("make")
        super().make_bucket(bucket_name, *args, **kwargs)  # type: ignore[arg-type]


async def test_the_first_store_creates_the_bucket_once_per_process(s3_server: S3Server) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    counting = CountingMinio(s3_server)
    store = S3AssetStore(counting, bucket, part_size=5 * MiB)
    assert await store.stat("acme/job_6/video.mp4") is None  # no bucket yet: nothing stored
    await store.delete("acme/job_6/video.mp4")  # nothing to delete: fine
    assert counting.calls == []
    assert not client(s3_server).bucket_exists(bucket)
    await asyncio.gather(  # concurrent first stores (the three variants of a job)
        *(store.put_stream(f"acme/job_6/{n}", chunks(b"x" * 100, 30), "video/mp4", {})
          for n in ("video.mp4", "thumbnail.webp", "spritesheet.jpg"))
    )  # fmt: skip
    await store.put_stream("acme/job_7/video.mp4", chunks(b"y" * 10, 4), "video/mp4", {})
    assert client(s3_server).bucket_exists(bucket)
    assert counting.calls == ["exists", "make"]  # asked once, for the whole process
    assert await store.stat("acme/job_6/video.mp4") is not None


async def test_a_bucket_created_by_another_replica_meanwhile_is_fine(s3_server: S3Server) -> None:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client(s3_server).make_bucket(bucket)  # the other replica won the race
    blind = CountingMinio(s3_server, blind=True)
    store = S3AssetStore(blind, bucket, part_size=5 * MiB)
    stored = await store.put_stream("acme/job_8/video.mp4", chunks(b"z" * 50, 7), "video/mp4", {})
    assert stored.size_bytes == 50
    assert blind.calls == ["exists", "make"]  # S3's "already exists / owned by you" tolerated


async def test_s3_down_at_the_first_store_is_tried_again_on_the_next(
    s3_server: S3Server,
) -> None:
    down = Minio(
        f"127.0.0.1:{closed_port()}", access_key="k", secret_key="s", secure=False,
        http_client=s3_http_client(connect_seconds=1, read_seconds=1),
    )  # fmt: skip
    store = S3AssetStore(down, f"b-{uuid.uuid4().hex[:12]}", part_size=5 * MiB)
    with pytest.raises(StoreUnavailable):  # creating the bucket: S3 is down, the job waits
        await store.put_stream("acme/job_9/video.mp4", chunks(b"x", 1), "video/mp4", {})
    store._client = client(s3_server)  # S3 is back (another address: same store, same process)
    stored = await store.put_stream("acme/job_9/video.mp4", chunks(b"x", 1), "video/mp4", {})
    assert client(s3_server).stat_object(stored.bucket, stored.key).size == 1

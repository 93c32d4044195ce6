"""Streamed uploads into a real S3 (SeaweedFS): multipart and single PUTs, checksums, failures
propagate."""

import asyncio
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from minio import Minio

from clipline.servers import S3Server
from services.storage.adapters import S3AssetStore, s3_http_client
from services.storage.ports import StoreUnavailable
from services.storage.s3http import (
    LengthMismatchError,
    S3Endpoint,
    S3Puts,
    S3RequestError,
)

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


def small_puts(
    s3: S3Server, *, secret: str | None = None, endpoint: str | None = None, **timing: float
) -> S3Puts:
    return S3Puts(
        S3Endpoint(endpoint or s3.endpoint, s3.access_key, secret or s3.secret_key),
        **({"connect_seconds": 1, "read_seconds": 5} | timing),
    )


@pytest.fixture
async def small(s3_server: S3Server) -> AsyncIterator[S3AssetStore]:
    """A store whose objects of known length up to a part go up in one PUT on the loop."""
    puts = small_puts(s3_server)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    try:
        yield S3AssetStore(client(s3_server), bucket, part_size=5 * MiB, puts=puts)
    finally:
        await puts.aclose()


def stored_names(s3: S3Server, bucket: str) -> list[str]:
    if not client(s3).bucket_exists(bucket):
        return []
    return [o.object_name for o in client(s3).list_objects(bucket, recursive=True)]


async def test_a_small_object_of_known_length_is_one_put(
    s3_server: S3Server, small: S3AssetStore
) -> None:
    data = os.urandom(300_000)
    key = "acme/2026/12/03/job_s1/thumbnail.webp"
    metadata = {"job-id": "job_s1", "tenant": "acme", "cost-micros": "400000"}
    stored = await small.put_stream(
        key, chunks(data, 64 * 1024), "image/webp", metadata, length=len(data)
    )
    assert (stored.size_bytes, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    obj = client(s3_server).get_object(stored.bucket, key)
    try:
        assert obj.read() == data
        assert obj.headers["Content-Type"] == "image/webp"
    finally:
        obj.close()
        obj.release_conn()
    stat = await small.stat(key)
    assert stat is not None
    assert stat.metadata == metadata
    assert stat.size_bytes == len(data)
    url = await small.presign(key)  # signed by storage's own SigV4 (no minio)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == data
        forged = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=36000")
        assert forged != url
        assert (await http.get(forged)).status_code == 403


@pytest.mark.parametrize("declared", [999, 1001])
async def test_a_source_longer_or_shorter_than_declared_stores_nothing(
    s3_server: S3Server, small: S3AssetStore, declared: int
) -> None:
    key = "acme/2026/12/03/job_s2/video.mp4"
    with pytest.raises(LengthMismatchError):
        await small.put_stream(key, chunks(b"v" * 1000, 100), "video/mp4", {}, length=declared)
    assert key not in stored_names(s3_server, small._bucket)
    assert await small.stat(key) is None


async def test_a_broken_source_stores_nothing_and_raises_its_own_error(
    s3_server: S3Server, small: S3AssetStore
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise ConnectionRefusedError("the upstream, not S3")

    key = "acme/2026/12/03/job_s3/video.mp4"
    with pytest.raises(ConnectionRefusedError):
        await small.put_stream(key, broken(), "video/mp4", {}, length=5000)
    assert key not in stored_names(s3_server, small._bucket)


async def test_a_small_put_to_an_unreachable_s3_is_store_unavailable(s3_server: S3Server) -> None:
    puts = small_puts(s3_server, endpoint=f"127.0.0.1:{closed_port()}")
    store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", 5 * MiB, puts=puts)
    try:
        with pytest.raises(StoreUnavailable):
            await store.put_stream("acme/job_s4/video.mp4", chunks(b"x" * 10, 4), "video/mp4",
                                   {}, length=10)  # fmt: skip
    finally:
        await puts.aclose()


async def test_the_signature_is_checked_by_s3(s3_server: S3Server) -> None:
    """A wrong secret is refused (so the right one was really verified, not ignored)."""
    puts = small_puts(s3_server, secret="not-the-secret")
    store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", 5 * MiB, puts=puts)
    try:
        with pytest.raises(S3RequestError) as refused:
            await store.put_stream("acme/job_s5/video.mp4", chunks(b"x" * 10, 4), "video/mp4",
                                   {}, length=10)  # fmt: skip
        assert refused.value.status == 403
    finally:
        await puts.aclose()


async def test_a_bucket_removed_under_the_store_is_made_again(
    s3_server: S3Server, small: S3AssetStore
) -> None:
    await small.put_stream("acme/job_s6/a.mp4", chunks(b"a" * 10, 5), "video/mp4", {}, length=10)
    s3 = client(s3_server)
    s3.remove_object(small._bucket, "acme/job_s6/a.mp4")
    s3.remove_bucket(small._bucket)
    refusals: list[str | None] = []
    try:  # MinIO and AWS answer NoSuchBucket (SeaweedFS makes the bucket on the PUT)
        await small.put_stream("acme/job_s6/b.mp4", chunks(b"b" * 10, 5), "video/mp4", {},
                               length=10)  # fmt: skip
    except S3RequestError as refused:
        refusals.append(refused.code)
    assert refusals in ([], ["NoSuchBucket"])
    stored = await small.put_stream(  # the next try (the job's redelivery) succeeds
        "acme/job_s6/b.mp4", chunks(b"b" * 10, 5), "video/mp4", {}, length=10
    )
    assert s3.stat_object(stored.bucket, stored.key).size == 10


async def test_a_large_or_unknown_length_object_still_goes_multipart(
    s3_server: S3Server, small: S3AssetStore
) -> None:
    data = os.urandom(6 * MiB)  # above one part: minio's multipart upload
    stored = await small.put_stream(
        "acme/job_s7/video.mp4", chunks(data, MiB), "video/mp4", {}, length=len(data)
    )
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    unknown = await small.put_stream("acme/job_s7/thumb.webp", chunks(b"t" * 99, 10),
                                     "image/webp", {})  # fmt: skip
    assert client(s3_server).stat_object(unknown.bucket, unknown.key).size == 99


@asynccontextmanager
async def fake_s3(answer: bytes | None) -> AsyncIterator[str]:
    """An endpoint (host:port) that reads nothing and answers `answer` to any request, or, with
    None, accepts the connection and stays silent (a stalled S3)."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if answer is not None:
            writer.write(answer)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in writers:
            writer.close()
        server.close()


async def test_a_stalled_s3_is_store_unavailable_within_the_puts_deadline(
    s3_server: S3Server,
) -> None:
    async with fake_s3(None) as endpoint:
        rate = 4 * MiB  # the PUT's deadline: 1 + 1 + its length at 4 MiB/s = 3 s
        puts = small_puts(s3_server, endpoint=endpoint, read_seconds=1, min_bytes_per_second=rate)
        store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", 5 * MiB, puts=puts)
        store._bucket_ready = True  # the bucket is not the point: the PUT is
        big = os.urandom(4 * MiB)  # more than the socket buffers take: the send stalls
        try:
            with pytest.raises(StoreUnavailable):
                await asyncio.wait_for(
                    store.put_stream("acme/job_s8/video.mp4", chunks(big, MiB), "video/mp4", {},
                                     length=len(big)),
                    timeout=3 + 10,  # generous: the PUT's own deadline must fire first
                )  # fmt: skip
        finally:
            await puts.aclose()


async def test_a_redirecting_endpoint_hands_small_objects_to_minio(s3_server: S3Server) -> None:
    error = b"<Error><Code>PermanentRedirect</Code></Error>"
    head = b"HTTP/1.1 301 Moved Permanently\r\nContent-Type: application/xml\r\n"
    redirect = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(error), error)
    async with fake_s3(redirect) as endpoint:
        puts = small_puts(s3_server, endpoint=endpoint)
        store = S3AssetStore(client(s3_server), f"b-{uuid.uuid4().hex[:12]}", 5 * MiB, puts=puts)
        try:
            with pytest.raises(S3RequestError) as refused:
                await store.put_stream("acme/job_s9/video.mp4", chunks(b"r" * 10, 5),
                                       "video/mp4", {}, length=10)  # fmt: skip
            assert (refused.value.status, refused.value.code) == (301, "PermanentRedirect")
            stored = await store.put_stream(  # the job's next try: minio stores it
                "acme/job_s9/video.mp4", chunks(b"r" * 10, 5), "video/mp4", {}, length=10
            )
        finally:
            await puts.aclose()
    assert client(s3_server).stat_object(stored.bucket, stored.key).size == 10

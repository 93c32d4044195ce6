"""Storage's S3 uploads observed (issue 20): each PUT a short client span with the AWS
semantic conventions (bucket, key; never the secret), its bytes counted, a failure S3's
counted by reason (a source that broke is not S3's)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from minio import Minio
from opentelemetry.trace import SpanKind

from services.storage.adapters import S3AssetStore
from services.storage.ports import StoreUnavailable
from services.storage.s3http import S3Endpoint, S3Puts, S3RequestError
from tests.otel_probe import metric_reader, reading, span_exporter, spans_named

SECRET = "s3-secret-" + uuid.uuid4().hex
BUCKET = "assets"


@pytest.fixture(autouse=True)
def _metrics() -> None:
    metric_reader()


@dataclass
class FakeS3:
    """Answers HEAD bucket 200 and each PUT with the next scripted answer (default 200)."""

    answers: list[tuple[int, str]] = field(default_factory=list)
    stored: dict[str, bytes] = field(default_factory=dict)

    async def handle(self, req: web.Request) -> web.StreamResponse:
        if req.method == "HEAD":
            return web.Response(status=200)
        body = await req.read()
        status, code = self.answers.pop(0) if self.answers else (200, "")
        if status == 200:
            self.stored[req.path] = body
            return web.Response(status=200)
        xml = f"<Error><Code>{code}</Code></Error>"
        return web.Response(status=status, text=xml, content_type="application/xml")


@dataclass
class Store:
    s3: FakeS3
    store: S3AssetStore


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    s3 = FakeS3()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s3.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    endpoint = f"127.0.0.1:{server.port}"
    client = Minio(
        endpoint, access_key="AKIDEXAMPLE", secret_key=SECRET, secure=False, region="us-east-1"
    )
    puts = S3Puts(S3Endpoint(endpoint, "AKIDEXAMPLE", SECRET), read_seconds=5.0)
    try:
        yield Store(s3, S3AssetStore(client, BUCKET, 5 * 1024 * 1024, puts=puts))
    finally:
        await puts.aclose()
        await server.close()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def broken() -> AsyncIterator[bytes]:
    yield b"abc"
    raise ConnectionResetError("the upstream went away")


async def test_an_upload_is_a_client_span_and_its_bytes_are_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = span_exporter(monkeypatch)
    before = reading("clipline.s3.transferred", {"operation": "put"})
    key = f"acme/job_{uuid.uuid4().hex}/video.mp4"

    stored = await store.store.put_stream(
        key, chunks(b"x" * 600, b"y" * 400), "video/mp4", {}, length=1000
    )

    assert stored.size_bytes == 1000
    assert reading("clipline.s3.transferred", {"operation": "put"}) - before == 1000
    (put,) = spans_named(spans, "S3.PutObject")
    assert put.kind is SpanKind.CLIENT
    assert dict(put.attributes or {}) == {
        "rpc.system": "aws-api", "rpc.service": "S3", "rpc.method": "PutObject",
        "http.request.method": "PUT", "aws.s3.bucket": BUCKET, "aws.s3.key": key,
        "clipline.s3.bytes": 1000,
    }  # fmt: skip
    assert key not in put.name  # per job: an attribute, never the name
    assert SECRET not in str(put.attributes)


@pytest.mark.parametrize(
    ("answer", "error", "reason"),
    [
        ((403, "AccessDenied"), S3RequestError, "AccessDenied"),
        ((503, "SlowDown"), StoreUnavailable, "unavailable"),
    ],
)
async def test_a_refused_upload_is_an_s3_error_by_reason(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    answer: tuple[int, str],
    error: type[Exception],
    reason: str,
) -> None:
    spans = span_exporter(monkeypatch)
    before = reading("clipline.s3.errors", {"operation": "put", "reason": reason})
    store.s3.answers.append(answer)

    with pytest.raises(error):
        await store.store.put_stream("k/video.mp4", chunks(b"z" * 10), "video/mp4", {}, length=10)

    assert reading("clipline.s3.errors", {"operation": "put", "reason": reason}) - before == 1
    (put,) = spans_named(spans, "S3.PutObject")
    assert put.attributes is not None
    assert put.attributes["error.type"] == error.__name__


async def test_a_source_that_broke_is_not_an_s3_error(store: Store) -> None:
    before = reading("clipline.s3.errors")
    sent = reading("clipline.s3.transferred", {"operation": "put"})
    with pytest.raises(ConnectionResetError):
        await store.store.put_stream("k/video.mp4", broken(), "video/mp4", {}, length=10)
    assert reading("clipline.s3.errors") == before
    assert reading("clipline.s3.transferred", {"operation": "put"}) == sent

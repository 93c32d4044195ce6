"""Each upstream call observed (issue 20): one short client span per call, named by its
endpoint's template with HTTP semantic conventions, and counted by endpoint and status; the
API key, a video id or a query never in a span; no answer counted as 'error'."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from shared.provider import (
    CreateVideo,
    OpenAIVideosProvider,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
)
from shared.provider.calls import AiohttpCalls
from shared.provider.downloads import AiohttpDownloads
from tests.otel_probe import metric_reader, reading, span_exporter

KEY = "sk-live-" + "k" * 40
VIDEO_ID = "video_" + "b" * 48
VIDEO = {
    "id": VIDEO_ID, "object": "video", "model": "sora-2", "status": "queued",
    "progress": 0, "created_at": 1, "size": "1280x720", "seconds": "4",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _metrics() -> None:
    metric_reader()


@dataclass
class Upstream:
    url: str
    provider: OpenAIVideosProvider
    downloads: AiohttpDownloads
    name: str
    traceparents: list[str] = field(default_factory=list)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A local upstream: create 200, retrieve 429, delete 404, list 200, content 200."""
    seen: list[str] = []

    async def answer(req: web.Request) -> web.StreamResponse:
        seen.append(req.headers.get("traceparent", ""))
        path, method = req.path, req.method
        if method == "POST" and path in ("/v1/videos", f"/v1/videos/{VIDEO_ID}/remix"):
            return web.json_response(VIDEO)
        if method == "GET" and path == "/v1/videos":
            return web.json_response({"object": "list", "data": [VIDEO], "has_more": False})
        if method == "GET" and path == f"/v1/videos/{VIDEO_ID}":
            error = {"error": {"message": "slow down", "type": "rate_limit"}}
            return web.json_response(error, status=429, headers={"retry-after": "2"})
        if method == "GET" and path.endswith("/content"):
            return web.Response(body=b"x" * 10, content_type="video/mp4")
        return web.json_response({"error": {"message": "no such video"}}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    name = f"p{uuid.uuid4().hex[:8]}"
    base = f"http://127.0.0.1:{server.port}/v1"
    calls = AiohttpCalls(base, KEY, timeout=5, provider=name)
    downloads = AiohttpDownloads(base, KEY, timeout=5, provider=name)
    unused = httpx.AsyncClient(base_url="http://127.0.0.1:9/v1/")
    provider = OpenAIVideosProvider(unused, downloads, calls, provider=name)
    try:
        yield Upstream(base, provider, downloads, name, seen)
    finally:
        await calls.aclose()
        await downloads.aclose()
        await unused.aclose()
        await server.close()


def count(up: Upstream, endpoint: str, method: str, status: str) -> float:
    labels = {"provider": up.name, "endpoint": endpoint, "method": method, "status": status}
    return reading("clipline.upstream.requests", labels)


def request(kind: str = "generate") -> CreateVideo:
    source = VIDEO_ID if kind != "generate" else None
    return CreateVideo(
        "sora-2", "1280x720", 4, "a boat", "job_" + "0" * 32, kind=kind, source_video_id=source
    )


def only_span(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def no_secret_in(span: ReadableSpan) -> None:
    text = f"{span.name} {dict(span.attributes or {})}"
    assert KEY not in text
    assert "?" not in str((span.attributes or {}).get("url.template", ""))


async def test_each_call_is_one_client_span_named_by_its_template(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = span_exporter(monkeypatch)
    await upstream.provider.create(request())
    create = only_span(list(spans.get_finished_spans()))
    assert create.name == "POST /v1/videos"
    assert create.kind is SpanKind.CLIENT
    attributes = dict(create.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.template"] == "/v1/videos"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["http.response.status_code"] == 200
    assert "error.type" not in attributes
    no_secret_in(create)
    # the span's context is what the upstream was sent
    assert upstream.traceparents[-1].split("-")[2] == format(create.context.span_id, "016x")

    spans.clear()
    with pytest.raises(ProviderRateLimited):
        await upstream.provider.retrieve(VIDEO_ID)
    retrieve = only_span(list(spans.get_finished_spans()))
    assert retrieve.name == "GET /v1/videos/{video_id}"  # no video id in a span's name
    assert retrieve.attributes is not None
    assert retrieve.attributes["http.response.status_code"] == 429
    assert retrieve.attributes["error.type"] == "429"
    assert VIDEO_ID not in str(dict(retrieve.attributes))
    no_secret_in(retrieve)


async def test_calls_are_counted_by_endpoint_method_and_status(upstream: Upstream) -> None:
    await upstream.provider.create(request())
    await upstream.provider.create(request("remix"))
    await upstream.provider.recent()
    with pytest.raises(ProviderRateLimited):
        await upstream.provider.retrieve(VIDEO_ID)
    with pytest.raises(ProviderNotFound):
        await upstream.provider.delete(VIDEO_ID)
    async with upstream.provider.download(VIDEO_ID, "video") as download:
        assert b"".join([c async for c in download.chunks]) == b"x" * 10

    assert count(upstream, "create", "POST", "200") == 1
    assert count(upstream, "remix", "POST", "200") == 1
    assert count(upstream, "list", "GET", "200") == 1
    assert count(upstream, "retrieve", "GET", "429") == 1  # 429s visible
    assert count(upstream, "delete", "DELETE", "404") == 1
    assert count(upstream, "content", "GET", "200") == 1
    labels = {"provider": upstream.name, "endpoint": "create"}
    assert reading("clipline.upstream.request.duration", labels) == 1


async def test_a_download_span_names_its_template_and_variant(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = span_exporter(monkeypatch)
    async with upstream.downloads.download(VIDEO_ID, "thumbnail") as download:
        async for _ in download.chunks:
            pass
    span = only_span(list(spans.get_finished_spans()))
    assert span.name == "GET /v1/videos/{video_id}/content"
    assert span.attributes is not None
    assert span.attributes["clipline.variant"] == "thumbnail"
    assert span.attributes["http.response.status_code"] == 200
    no_secret_in(span)


async def test_a_call_without_an_answer_is_counted_as_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = span_exporter(monkeypatch)
    name = f"p{uuid.uuid4().hex[:8]}"
    calls = AiohttpCalls(f"http://127.0.0.1:{closed_port()}/v1", KEY, timeout=2, provider=name)
    unused = httpx.AsyncClient(base_url="http://127.0.0.1:9/v1/")
    try:
        with pytest.raises(ProviderNotSent):
            await OpenAIVideosProvider(unused, calls=calls).retrieve(VIDEO_ID)
    finally:
        await calls.aclose()
        await unused.aclose()
    labels = {"provider": name, "endpoint": "retrieve", "method": "GET", "status": "error"}
    assert reading("clipline.upstream.requests", labels) == 1
    span = only_span(list(spans.get_finished_spans()))
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ProviderNotSent"
    assert "http.response.status_code" not in span.attributes


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed: refused while the test runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

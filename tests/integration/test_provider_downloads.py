"""Variant downloads over aiohttp (storage's client): the same contract and typed errors as the
httpx adapter, against a real HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import TracerProvider

from shared.provider import (
    OpenAIVideosProvider,
    ProviderMalformedResponse,
    ProviderNoAnswer,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
)
from shared.provider.downloads import AiohttpDownloads

pytestmark = pytest.mark.integration
PAYLOAD = bytes(range(256)) * 9_000  # 2.3 MB: several chunks
SEEN = web.AppKey("seen", list[web.Request])


async def content(request: web.Request) -> web.StreamResponse:
    video = request.match_info["video"]
    request.app[SEEN].append(request)
    if video == "video_ok":
        return web.Response(body=PAYLOAD, content_type="image/webp")
    if video == "video_gone":
        body = {"error": {"message": "Video not found", "code": "video_not_found"}}
        return web.json_response(body, status=404)
    if video == "video_busy":
        return web.json_response({"error": {"message": "slow down"}}, status=429,
                                 headers={"retry-after-ms": "1500"})  # fmt: skip
    if video == "video_bad":
        body = {"error": {"message": "no such variant", "param": "variant"}}
        return web.json_response(body, status=400)
    if video == "video_gzip":  # a gateway compressing what it was asked not to
        return web.Response(body=b"\x1f\x8b-not-the-file", headers={"Content-Encoding": "gzip"})
    if video == "video_cut":  # declares the whole payload, sends half, drops the connection
        response = web.StreamResponse(headers={"Content-Length": str(len(PAYLOAD))})
        await response.prepare(request)
        await response.write(PAYLOAD[: len(PAYLOAD) // 2])
        assert request.transport is not None
        request.transport.close()
        return response
    return web.json_response({"error": {"message": "boom"}}, status=503)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[AiohttpDownloads, list[web.Request]]]:
    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/v1/videos/{video}/content", content)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    downloads = AiohttpDownloads(f"http://127.0.0.1:{server.port}/v1", "sk-test", timeout=5)
    try:
        yield downloads, app[SEEN]
    finally:
        await downloads.aclose()
        await server.close()


async def test_a_download_streams_the_variant_with_its_type_and_length(
    upstream: tuple[AiohttpDownloads, list[web.Request]],
) -> None:
    downloads, seen = upstream
    unused = httpx.AsyncClient(base_url="http://127.0.0.1:9/v1/")  # downloads go elsewhere
    async with (
        unused,
        OpenAIVideosProvider(unused, downloads).download("video_ok", "thumbnail") as dl,
    ):
        assert dl.content_type == "image/webp"
        assert dl.content_length == len(PAYLOAD)
        got = b"".join([chunk async for chunk in dl.chunks])
    assert got == PAYLOAD
    request = seen[0]
    assert request.query["variant"] == "thumbnail"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["Accept-Encoding"] == "identity"  # the file's own bytes


async def test_the_job_trace_goes_upstream_with_the_request(
    upstream: tuple[AiohttpDownloads, list[web.Request]],
) -> None:
    downloads, seen = upstream
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("job") as job:
        async with downloads.download("video_ok", "video") as dl:
            async for _ in dl.chunks:
                pass
    trace_id = format(job.get_span_context().trace_id, "032x")
    assert trace_id in seen[0].headers.get("traceparent", ""), seen[0].headers


@pytest.mark.parametrize(
    ("video", "error"),
    [
        ("video_gone", ProviderNotFound),
        ("video_busy", ProviderRateLimited),
        ("video_bad", ProviderRejected),
        ("video_down", ProviderServerError),
    ],
)
async def test_an_error_answer_is_the_same_typed_error_as_over_httpx(
    upstream: tuple[AiohttpDownloads, list[web.Request]], video: str, error: type[Exception]
) -> None:
    downloads, _ = upstream
    with pytest.raises(error) as raised:
        async with downloads.download(video, "video"):
            pass
    if video == "video_gone":
        assert raised.value.code == "video_not_found"  # type: ignore[attr-defined]
        assert "Video not found" in str(raised.value)
    if video == "video_busy":
        assert raised.value.retry_after_seconds == 1.5  # type: ignore[attr-defined]


async def test_a_body_cut_short_is_no_answer_not_a_short_file(
    upstream: tuple[AiohttpDownloads, list[web.Request]],
) -> None:
    downloads, _ = upstream
    received: list[bytes] = []

    async def read_all() -> None:
        async with downloads.download("video_cut", "video") as dl:
            received.extend([chunk async for chunk in dl.chunks])

    with pytest.raises(ProviderNoAnswer, match="broke"):
        await read_all()
    assert sum(map(len, received)) < len(PAYLOAD)
    async with downloads.download("video_ok", "video") as dl:  # the session still works
        assert len(b"".join([c async for c in dl.chunks])) == len(PAYLOAD)


async def test_no_upstream_is_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    downloads = AiohttpDownloads(f"http://127.0.0.1:{port}/v1", "sk-test", timeout=2)
    try:
        with pytest.raises(ProviderNotSent):
            async with downloads.download("video_ok", "video"):
                pass
    finally:
        await downloads.aclose()


async def test_concurrent_downloads_share_one_session(
    upstream: tuple[AiohttpDownloads, list[web.Request]],
) -> None:
    downloads, seen = upstream

    async def one(variant: str) -> int:
        async with downloads.download("video_ok", variant) as dl:  # type: ignore[arg-type]
            return len(b"".join([c async for c in dl.chunks]))

    sizes = await asyncio.gather(*(one(v) for v in ("video", "thumbnail", "spritesheet")))
    assert sizes == [len(PAYLOAD)] * 3
    assert sorted(r.query["variant"] for r in seen) == ["spritesheet", "thumbnail", "video"]


async def test_a_compressed_answer_is_refused_not_stored_as_the_file(
    upstream: tuple[AiohttpDownloads, list[web.Request]],
) -> None:
    downloads, _ = upstream
    with pytest.raises(ProviderMalformedResponse, match="Content-Encoding gzip"):
        async with downloads.download("video_gzip", "video"):
            pass

"""The provider's calls over aiohttp (shared/provider/calls.py, what the services use) give the
same requests, answers and typed errors as over httpx: each check runs through both, against a
real loopback HTTP server for aiohttp and httpx's MockTransport with the same handler."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import TracerProvider

from shared.provider import (
    CreateVideo,
    InputImage,
    OpenAIVideosProvider,
    ProviderMalformedResponse,
    ProviderNoAnswer,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
)
from shared.provider.calls import AiohttpCalls

Handler = Callable[[httpx.Request], httpx.Response]
Make = Callable[[Handler], Awaitable[OpenAIVideosProvider]]
VIDEO = {
    "id": "video_" + "a" * 48, "object": "video", "model": "sora-2", "status": "queued",
    "progress": 0, "created_at": 1, "size": "1280x720", "seconds": "4",
}  # fmt: skip
DROP = httpx.Response(599)
"""A handler's answer meaning: close the connection without answering (after reading it all)."""


@pytest.fixture(params=["httpx", "aiohttp"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """A provider whose upstream is `handler`, over the transport of the test's parameter."""
    closers: list[Callable[[], Awaitable[None]]] = []

    async def over_httpx(handler: Handler) -> OpenAIVideosProvider:
        def answer(req: httpx.Request) -> httpx.Response:
            got = handler(req)
            if got is DROP:
                raise httpx.RemoteProtocolError("server disconnected", request=req)
            return got

        client = httpx.AsyncClient(
            base_url="http://up.test/v1/",
            headers={"Authorization": "Bearer sk-test"},
            transport=httpx.MockTransport(answer),
        )
        closers.append(client.aclose)
        return OpenAIVideosProvider(client)

    async def over_aiohttp(handler: Handler) -> OpenAIVideosProvider:
        async def bridge(req: web.Request) -> web.StreamResponse:
            body = await req.read()
            asked = httpx.Request(req.method, str(req.url), headers=req.headers, content=body)
            got = handler(asked)
            if got is DROP:
                assert req.transport is not None
                req.transport.close()
                return web.Response()
            return web.Response(status=got.status_code, body=got.content, headers=got.headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", bridge)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        calls = AiohttpCalls(f"http://127.0.0.1:{server.port}/v1", "sk-test", timeout=5)
        unused = httpx.AsyncClient(base_url="http://127.0.0.1:9/v1/")  # calls go elsewhere
        closers.extend([server.close, calls.aclose, unused.aclose])
        return OpenAIVideosProvider(unused, calls=calls)

    yield over_httpx if request.param == "httpx" else over_aiohttp
    for close in reversed(closers):
        await close()


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        ("remix", "/v1/videos/video_src/remix", {"prompt": "p"}),
        ("edit", "/v1/videos/edits", {"prompt": "p", "video": {"id": "video_src"}}),
        ("extend", "/v1/videos/extensions",
         {"prompt": "p", "seconds": "8", "video": {"id": "video_src"}}),
    ],
)  # fmt: skip
async def test_a_remix_edit_or_extension_is_json_with_the_source_by_id_and_the_ids(
    make: Make, kind: str, path: str, body: dict[str, object]
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VIDEO)

    provider = await make(handler)
    made = CreateVideo(
        "sora-2", "1280x720", 8, "p", "job_9", kind=kind, source_video_id="video_src"
    )
    assert (await provider.create(made)).id == VIDEO["id"]
    req = seen[0]
    assert (req.method, req.url.path) == ("POST", path)
    assert req.headers["content-type"].startswith("application/json")
    assert json.loads(req.content) == body
    assert (req.headers["X-Client-Request-Id"], req.headers["Idempotency-Key"]) == (
        "job_9", "job_9",
    )  # fmt: skip


async def test_create_sends_the_documented_json_and_ids(make: Make) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VIDEO)

    provider = await make(handler)
    video = await provider.create(CreateVideo("sora-2", "1280x720", 4, "a cat", "job_1"))
    assert video.id == VIDEO["id"]
    req = seen[0]
    assert (req.method, req.url.path) == ("POST", "/v1/videos")
    assert json.loads(req.content) == {
        "prompt": "a cat", "model": "sora-2", "size": "1280x720", "seconds": "4",
    }  # fmt: skip
    assert req.headers["X-Client-Request-Id"] == req.headers["Idempotency-Key"] == "job_1"
    assert req.headers["Authorization"] == "Bearer sk-test"


async def test_create_with_image_is_multipart_with_a_file_part(make: Make) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VIDEO)

    image = InputImage(b"\x89PNG-bytes", "image/png", "input_reference.png")
    provider = await make(handler)
    await provider.create(CreateVideo("sora-2", "1280x720", 8, "a cat", "job_3", image))
    req = seen[0]
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = req.content
    assert b'name="input_reference"; filename="input_reference.png"' in body
    assert b"image/png" in body
    assert b"\x89PNG-bytes" in body
    assert b'name="seconds"' in body
    assert b"\r\n\r\n8\r\n" in body
    assert req.headers["Idempotency-Key"] == "job_3"


async def test_retrieve_reads_the_poll_hint_and_lists_follow_the_cursor(make: Make) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/videos"):
            after = request.url.params.get("after")
            page = [{**VIDEO, "id": "video_2"}] if after is None else [{**VIDEO, "id": "video_1"}]
            return httpx.Response(200, json={"data": page, "has_more": after is None})
        return httpx.Response(200, json=VIDEO, headers={"openai-poll-after-ms": "1500"})

    provider = await make(handler)
    video, poll_after = await provider.retrieve(str(VIDEO["id"]))
    assert (video.id, poll_after) == (VIDEO["id"], 1.5)
    listed = await provider.recent(limit=1, since=0)
    assert [v.id for v in listed] == ["video_2", "video_1"]


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (429, {"retry-after-ms": "1500"}, ProviderRateLimited),
        (404, {}, ProviderNotFound),
        (400, {}, ProviderRejected),
        (500, {}, ProviderServerError),
    ],
)
async def test_errors_are_typed(
    make: Make, status: int, headers: dict[str, str], error: type[Exception]
) -> None:
    body = {"error": {"message": "nope", "param": "seconds", "code": "invalid_value"}}
    provider = await make(lambda _: httpx.Response(status, json=body, headers=headers))
    with pytest.raises(error, match="nope") as info:
        await provider.retrieve("video_x")
    if status == 429:
        assert info.value.retry_after_seconds == 1.5  # type: ignore[attr-defined]


async def test_a_body_that_is_no_video_is_malformed(make: Make) -> None:
    provider = await make(lambda _: httpx.Response(200, content=b"<html>gateway</html>"))
    with pytest.raises(ProviderMalformedResponse):
        await provider.retrieve("video_x")


async def test_a_dropped_answer_to_a_create_is_no_answer(make: Make) -> None:
    """The upstream read the create and closed the connection: the create may exist, so the
    error must say so (ProviderNoAnswer), never that nothing was sent."""
    provider = await make(lambda _: DROP)
    with pytest.raises(ProviderNoAnswer):
        await provider.create(CreateVideo("sora-2", "1280x720", 4, "p", "job_4"))


async def test_a_refused_connection_is_not_sent() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls = AiohttpCalls(f"http://127.0.0.1:{port}/v1", "sk-test", timeout=5)
    async with httpx.AsyncClient() as unused:
        try:
            with pytest.raises(ProviderNotSent):
                await OpenAIVideosProvider(unused, calls=calls).create(
                    CreateVideo("sora-2", "1280x720", 4, "p", "job_5")
                )
        finally:
            await calls.aclose()


async def test_the_job_trace_goes_upstream_and_calls_share_one_session() -> None:
    seen: list[web.Request] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response(VIDEO)

    app = web.Application()
    app.router.add_get("/v1/videos/{video}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    calls = AiohttpCalls(f"http://127.0.0.1:{server.port}/v1", "sk-test", timeout=5)
    try:
        async with httpx.AsyncClient() as unused:
            provider = OpenAIVideosProvider(unused, calls=calls)
            tracer = TracerProvider().get_tracer("test")
            with tracer.start_as_current_span("job") as job:
                await asyncio.gather(*(provider.retrieve(str(VIDEO["id"])) for _ in range(3)))
    finally:
        await calls.aclose()
        await server.close()
    trace_id = format(job.get_span_context().trace_id, "032x")
    assert all(trace_id in r.headers.get("traceparent", "") for r in seen), seen
    assert len(seen) == 3

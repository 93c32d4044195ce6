"""The OpenAI-videos adapter: wire format, typed errors, retry hints (httpx MockTransport)."""

import json
import socket
from collections.abc import Callable

import httpx
import pytest

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
    ProviderUnavailable,
)

VIDEO = {
    "id": "video_" + "a" * 48, "object": "video", "model": "sora-2", "status": "queued",
    "progress": 0, "created_at": 1, "size": "1280x720", "seconds": "4",
}  # fmt: skip


def provider(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAIVideosProvider:
    client = httpx.AsyncClient(
        base_url="http://up.test/v1/",
        headers={"Authorization": "Bearer sk-test"},
        transport=httpx.MockTransport(handler),
    )
    return OpenAIVideosProvider(client)


async def test_create_sends_the_documented_json_and_ids() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VIDEO)

    video = await provider(handler).create(CreateVideo("sora-2", "1280x720", 4, "a cat", "job_1"))
    assert video.id == VIDEO["id"]
    req = seen[0]
    assert req.url.path == "/v1/videos"
    assert json.loads(req.content) == {
        "prompt": "a cat",
        "model": "sora-2",
        "size": "1280x720",
        "seconds": "4",
    }
    assert req.headers["X-Client-Request-Id"] == "job_1"
    assert req.headers["Idempotency-Key"] == "job_1"
    assert req.headers["Authorization"] == "Bearer sk-test"


async def test_unknown_status_and_missing_keys_still_parse() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "video_x", "status": "expired"})

    video, hint = await provider(handler).retrieve("video_x")
    assert video.status == "expired"
    assert not video.terminal
    assert hint is None


async def test_retrieve_reads_poll_hint_and_tolerates_missing_nullable_keys() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=VIDEO, headers={"openai-poll-after-ms": "1500"})

    video, hint = await provider(handler).retrieve(str(VIDEO["id"]))
    assert video.completed_at is None
    assert video.error is None
    assert hint == 1.5


@pytest.mark.parametrize(
    ("status", "headers", "error", "check"),
    [
        (
            429,
            {"retry-after-ms": "250"},
            ProviderRateLimited,
            lambda e: e.retry_after_seconds == 0.25,
        ),
        (429, {"retry-after": "3"}, ProviderRateLimited, lambda e: e.retry_after_seconds == 3.0),
        (429, {}, ProviderRateLimited, lambda e: e.retry_after_seconds is None),
        (503, {}, ProviderServerError, lambda e: e.retryable and e.status == 503),
        (500, {}, ProviderServerError, lambda e: isinstance(e, ProviderUnavailable)),
        (404, {}, ProviderNotFound, lambda e: not e.retryable),
        (400, {}, ProviderRejected, lambda e: e.param == "seconds" and e.code == "invalid_value"),
    ],
)
async def test_errors_are_typed(
    status: int, headers: dict[str, str], error: type[Exception], check: Callable[..., bool]
) -> None:
    body = {"error": {"message": "nope", "type": "invalid_request_error",
                      "param": "seconds", "code": "invalid_value"}}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    with pytest.raises(error) as info:
        await provider(handler).retrieve("video_x")
    assert check(info.value)
    assert "nope" in str(info.value)


async def test_malformed_and_network_failures() -> None:
    def bad_body(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": "video_x", "progress": "lots"})

    with pytest.raises(ProviderMalformedResponse):
        await provider(bad_body).retrieve("video_x")

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html>gateway error</html>")

    with pytest.raises(ProviderMalformedResponse):
        await provider(not_json).retrieve("video_x")


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        # Nothing left the client: the upstream cannot have acted on it.
        (httpx.ConnectError("refused"), ProviderNotSent),
        (httpx.ConnectTimeout("slow handshake"), ProviderNotSent),
        (httpx.PoolTimeout("no free connection"), ProviderNotSent),
        # Sent, or partly sent, and the answer lost: a create may exist.
        (httpx.RemoteProtocolError("server disconnected"), ProviderNoAnswer),
        (httpx.ReadTimeout("no answer"), ProviderNoAnswer),
        (httpx.WriteTimeout("stalled upload"), ProviderNoAnswer),
        (httpx.ReadError("reset by peer"), ProviderNoAnswer),
        (httpx.WriteError("broken pipe"), ProviderNoAnswer),
    ],
)
async def test_a_failed_exchange_says_whether_the_request_left(
    raised: httpx.TransportError, error: type[ProviderUnavailable]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raised.request = request
        raise raised

    with pytest.raises(ProviderUnavailable) as info:
        await provider(handler).create(CreateVideo("sora-2", "1280x720", 4, "p", "job_2"))
    assert type(info.value) is error, type(info.value)
    assert info.value.retryable


async def test_a_refused_connection_to_a_real_port_is_not_sent() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OpenAIVideosProvider.client(f"http://127.0.0.1:{port}/v1", "sk-test", 5.0)
    async with client:
        with pytest.raises(ProviderNotSent):
            await OpenAIVideosProvider(client).create(
                CreateVideo("sora-2", "1280x720", 4, "p", "job_3")
            )


async def test_download_streams_chunks_with_content_type() -> None:
    payload = bytes(range(256)) * 10_000

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["variant"] == "thumbnail"
        return httpx.Response(200, content=payload, headers={"content-type": "image/webp"})

    async with provider(handler).download("video_x", "thumbnail") as dl:
        assert dl.content_type == "image/webp"
        got = b"".join([c async for c in dl.chunks])
    assert got == payload


async def test_create_with_image_is_multipart_with_a_file_part() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VIDEO)

    image = InputImage(b"\x89PNG-bytes", "image/png", "input_reference.png")
    await provider(handler).create(CreateVideo("sora-2", "1280x720", 8, "a cat", "job_3", image))
    req = seen[0]
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = req.content
    assert b'name="input_reference"; filename="input_reference.png"' in body
    assert b"Content-Type: image/png" in body
    assert b"\x89PNG-bytes" in body
    assert b'name="seconds"\r\n\r\n8' in body
    assert req.headers["Idempotency-Key"] == "job_3"


def listing(total: int) -> Callable[[httpx.Request], httpx.Response]:
    """An upstream with `total` videos made one a second (video_<n> at n), listed newest first
    in pages that follow the `after` cursor."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["order"] == "desc"
        limit = int(request.url.params["limit"])
        after = request.url.params.get("after")
        start = int(after.removeprefix("video_")) - 1 if after else total - 1
        ids = list(range(start, max(-1, start - limit), -1))
        data = [{**VIDEO, "id": f"video_{n}", "created_at": n} for n in ids]
        return httpx.Response(200, json={"data": data, "has_more": bool(ids) and ids[-1] > 0})

    return handler


async def test_recent_pages_back_to_since_and_no_further() -> None:
    videos = await provider(listing(1000)).recent(limit=100, since=750)
    assert len(videos) == 300  # pages of 100 until one reaches back before 750
    assert [v.id for v in videos[:2]] == ["video_999", "video_998"]
    assert videos[-1].created_at == 700
    one_page = await provider(listing(1000)).recent(limit=100)
    assert len(one_page) == 100
    assert len(await provider(listing(150)).recent(limit=100, since=0)) == 150  # to the end
    capped = await provider(listing(5000)).recent(limit=100, since=0)
    assert len(capped) == 1000  # at most ten pages


async def test_a_failed_page_is_asked_again_before_the_listing_fails() -> None:
    answers = [503, 502, 200]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        status = answers.pop(0) if answers else 503
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "busy"}})
        return httpx.Response(200, json={"data": [VIDEO], "has_more": False})

    assert [v.id for v in await provider(handler).recent(since=0)] == [VIDEO["id"]]
    assert len(seen) == 3
    with pytest.raises(ProviderServerError):  # three failures in a row: the listing fails
        await provider(handler).recent(since=0)

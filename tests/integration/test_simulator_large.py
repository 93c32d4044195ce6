"""Large-asset mode (CLIPLINE_SIM_VIDEO_BYTES): the MP4 padded to an exact size by a `free` box,
still a valid MP4, streamed in bounded chunks, and downloadable as before."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import AsyncIterator, MutableMapping
from typing import Any, NamedTuple

import av
import httpx
import openai
import pytest

from services.simulator.app import CHUNK_BYTES, Simulator, build_app
from services.simulator.assets import AssetCache, AssetKey
from services.simulator.faults import Faults, Generation
from shared.provider.openai_videos import OpenAIVideosProvider
from tests.fakes import FakeClock
from tests.integration.test_simulator_api import (
    API_KEY,
    AUTH,
    DONE,
    asgi_client,
    create,
    fake_asset,
    make_app,
    serve,
    settings,
)

MIB = 1024 * 1024
ODD_SIZE = MIB + 12_345  # not a multiple of any chunk size


def boxes(data: bytes) -> list[tuple[str, int, int]]:
    """The top-level boxes of an ISO BMFF file as (type, offset, size); sizes must tile it."""
    found, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        assert size >= 8, f"box {kind!r} at {offset} has size {size}"
        found.append((kind.decode("latin-1"), offset, size))
        offset += size
    assert offset == len(data), "the boxes' sizes do not add up to the file"
    return found


class Large(NamedTuple):
    http: httpx.AsyncClient
    app: Simulator
    cache: AssetCache
    video_id: str


@pytest.fixture
async def padded() -> AsyncIterator[Large]:
    """A small-asset simulator (real H.264, rendered fast) in large-asset mode, one video done."""
    clock = FakeClock()
    cache = AssetCache(fps=12, small=True)
    app = build_app(settings(small_assets=True, video_bytes=ODD_SIZE), clock=clock, cache=cache)
    async with asgi_client(app) as http:
        video_id = await create(http, size="1280x720", seconds="4")
        clock.advance(DONE)
        yield Large(http, app, cache, video_id)


async def test_padded_video_is_exactly_the_size_and_a_valid_mp4(
    padded: Large,
) -> None:
    http, _, cache, video_id = padded
    response = await http.get(f"/v1/videos/{video_id}/content", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    data = response.content
    assert len(data) == ODD_SIZE == int(response.headers["content-length"])

    original = (await cache.get("video", 1280, 720, 4)).data
    assert data[: len(original)] == original  # ftyp, moov, mdat untouched, byte for byte
    layout = boxes(data)
    kinds = [kind for kind, _, _ in layout]
    assert {"ftyp", "moov", "mdat"} <= set(kinds)
    assert kinds[0] == "ftyp"
    assert layout[-1] == ("free", len(original), ODD_SIZE - len(original))
    assert data[len(original) + 8 :] == bytes(ODD_SIZE - len(original) - 8)
    assert boxes(original) == layout[:-1]

    with av.open(io.BytesIO(data), mode="r") as container:  # a player still reads it
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert len(list(container.decode(stream))) == 4  # small mode: 1 frame a second

    thumbnail = await http.get(
        f"/v1/videos/{video_id}/content", params={"variant": "thumbnail"}, headers=AUTH
    )
    assert thumbnail.content == (await cache.get("thumbnail", 1280, 720, 4)).data  # unpadded


@pytest.mark.filterwarnings("ignore:The Sora API is scheduled:DeprecationWarning")
async def test_openai_compatible_clients_download_the_padded_video(
    padded: Large,
) -> None:
    http, app, _, video_id = padded
    expected = (await http.get(f"/v1/videos/{video_id}/content", headers=AUTH)).content
    async with serve(app) as url:  # over real HTTP, as storage and the SDK reach an upstream
        async with OpenAIVideosProvider.client(f"{url}/v1", API_KEY) as upstream:
            provider = OpenAIVideosProvider(upstream)
            async with provider.download(video_id, "video") as download:
                assert download.content_length == ODD_SIZE
                digest, count = hashlib.sha256(), 0
                async for chunk in download.chunks:
                    digest.update(chunk)
                    count += len(chunk)
        assert count == ODD_SIZE
        assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()

        async with openai.AsyncOpenAI(api_key=API_KEY, base_url=f"{url}/v1") as sdk:
            content = await sdk.videos.download_content(video_id)
            assert content.content == expected


async def get_raw(app: Simulator, path: str) -> tuple[dict[str, str], list[int], bool]:
    """GET `path` straight through the ASGI app: the response headers, the size of each body
    message the simulator sent (the bytes are checked and dropped, never kept), and whether the
    response was completed."""
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"simulator"), (b"authorization", f"Bearer {API_KEY}".encode())],
    }  # fmt: skip
    headers: dict[str, str] = {}
    sizes: list[int] = []
    completed = False

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal completed
        if message["type"] == "http.response.start":
            headers.update((k.decode(), v.decode()) for k, v in message["headers"])
            assert message["status"] == 200
        elif message.get("more_body", False):
            sizes.append(len(message["body"]))
        else:
            assert message["body"] == b""
            completed = True

    await app(scope, receive, send)
    return headers, sizes, completed


async def test_a_large_video_is_streamed_in_bounded_chunks() -> None:
    size = 64 * MIB + 3
    clock = FakeClock()
    app = make_app(clock, video_bytes=size)
    async with asgi_client(app) as http:
        video_id = await create(http)
        clock.advance(DONE)
        headers, sizes, completed = await get_raw(app, f"/v1/videos/{video_id}/content")
    assert completed
    assert int(headers["content-length"]) == size == sum(sizes)
    assert max(sizes) <= CHUNK_BYTES  # never the whole file at once
    assert len(sizes) >= size // CHUNK_BYTES


async def test_a_truncated_padded_download_announces_the_whole_and_stops_early() -> None:
    size = 4 * MIB
    zero = Generation(queue_seconds=0, seconds=0)
    faults = Faults(generation=zero, truncate_download_rate=1.0, truncate_fraction=0.5)
    app = make_app(FakeClock(), video_bytes=size, faults=faults)
    async with asgi_client(app) as http:
        video_id = await create(http)
        headers, sizes, completed = await get_raw(app, f"/v1/videos/{video_id}/content")
    assert not completed
    assert int(headers["content-length"]) == size
    assert sum(sizes) == size // 2


async def test_too_small_a_size_serves_the_plain_video() -> None:
    clock = FakeClock()
    async with asgi_client(make_app(clock, video_bytes=10)) as http:
        video_id = await create(http, size="1280x720", seconds="4")
        clock.advance(DONE)
        response = await http.get(f"/v1/videos/{video_id}/content", headers=AUTH)
    assert response.content == fake_asset(AssetKey("video", 1280, 720, 4, 12))

"""HTTP tests of the Sora 2 simulator through its ASGI app, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from clipline.servers import LOOPBACK, free_port, http_ok, spawn, stop_pid, wait_until
from services.simulator.app import build_app
from services.simulator.assets import AssetCache, AssetKey
from services.simulator.settings import LogSettings, SimulatorSettings
from shared.provider.wire import UpstreamVideo
from tests.fakes import START_WALL, FakeClock

API_KEY = "sk-sim-test"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
VIDEO_KEYS = {
    "id",
    "object",
    "model",
    "status",
    "progress",
    "created_at",
    "completed_at",
    "expires_at",
    "prompt",
    "size",
    "seconds",
    "remixed_from_video_id",
    "error",
}
QUEUE, GENERATION = 0.5, 6.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def asset_dir(tmp_path: Path) -> Path:
    return tmp_path / "assets"


@pytest.fixture
async def client(clock: FakeClock, asset_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = SimulatorSettings(
        api_key=SecretStr(API_KEY),
        queue_seconds=QUEUE,
        generation_seconds=GENERATION,
        fps=12,
        poll_after_ms=750,
        asset_dir=asset_dir,
    )
    app = build_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as http:
        yield http


def error(message: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def image_bytes(width: int, height: int, image_format: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, format=image_format)
    return out.getvalue()


async def create(http: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await http.post("/v1/videos", json={"prompt": "a red fox", **body}, headers=AUTH)
    assert response.status_code == 200, response.text
    video: dict[str, object] = response.json()
    return video


async def creates(http: httpx.AsyncClient) -> list[dict[str, object]]:
    response = await http.get("/control/creates")
    assert response.status_code == 200
    records: list[dict[str, object]] = response.json()
    return records


# --- health, request ids, auth ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/v1/healthz"])
async def test_healthz_needs_no_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])


async def test_every_response_has_its_own_request_id(client: httpx.AsyncClient) -> None:
    responses = [
        await client.get("/healthz"),
        await client.post("/v1/videos", json={"prompt": "p"}),
        await client.get("/v1/videos/video_nope", headers=AUTH),
        await client.post("/v1/videos", json={"prompt": "p", "seconds": 4}, headers=AUTH),
        await client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH),
        await client.get("/nowhere"),
    ]
    assert [r.status_code for r in responses] == [200, 401, 404, 400, 200, 404]
    ids = [r.headers["x-request-id"] for r in responses]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("headers", "message_start"),
    [
        ({}, "You didn't provide an API key."),
        ({"Authorization": "Basic c2stc2ltLXRlc3Q6"}, "You didn't provide an API key."),
        ({"Authorization": "Bearer "}, "You didn't provide an API key."),
        ({"Authorization": "Bearer sk-wrong-key-123"}, "Incorrect API key provided."),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/videos"),
        ("GET", "/v1/videos/video_x"),
        ("GET", "/v1/videos/video_x/content"),
        ("DELETE", "/v1/videos/video_x"),
    ],
)
async def test_bad_or_missing_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], message_start: str, method: str, path: str
) -> None:
    response = await client.request(method, path, json={"prompt": "p"}, headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"].startswith(message_start)
    assert body["error"]["type"] == "invalid_request_error"
    expected_code = "invalid_api_key" if message_start.startswith("Incorrect") else None
    assert body["error"]["code"] == expected_code
    assert body["error"]["param"] is None
    assert "sk-wrong-key-123" not in response.text
    assert await creates(client) == []


async def test_any_bearer_token_without_a_configured_key(clock: FakeClock) -> None:
    app = build_app(SimulatorSettings(api_key=None), clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as http:
        ok = await http.post(
            "/v1/videos", json={"prompt": "p"}, headers={"Authorization": "Bearer whatever"}
        )
        missing = await http.post("/v1/videos", json={"prompt": "p"})
    assert ok.status_code == 200
    assert missing.status_code == 401


# --- create ---------------------------------------------------------------------------------------


async def test_json_create_returns_the_full_queued_video(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/videos", json={"prompt": "a red fox"}, headers=AUTH)
    assert response.status_code == 200
    video = response.json()
    assert set(video) == VIDEO_KEYS
    assert re.fullmatch(r"video_[0-9a-f]{48}", video["id"])
    assert {k: v for k, v in video.items() if k != "id"} == {
        "object": "video",
        "model": "sora-2",
        "status": "queued",
        "progress": 0,
        "created_at": int(START_WALL),
        "completed_at": None,
        "expires_at": None,
        "prompt": "a red fox",
        "size": "720x1280",
        "seconds": "4",
        "remixed_from_video_id": None,
        "error": None,
    }
    assert UpstreamVideo.model_validate(video).status == "queued"


async def test_multipart_create_with_text_fields(client: httpx.AsyncClient) -> None:
    fields = {"prompt": "p", "model": "sora-2-pro", "seconds": "8", "size": "1792x1024"}
    response = await client.post(
        "/v1/videos", files={k: (None, v) for k, v in fields.items()}, headers=AUTH
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200, response.text
    video = response.json()
    assert (video["prompt"], video["model"], video["seconds"], video["size"]) == tuple(
        fields.values()
    )


async def test_dated_slug_is_echoed_and_limited_like_its_base(client: httpx.AsyncClient) -> None:
    video = await create(client, model="sora-2-pro-2025-10-06", size="1920x1080", seconds="20")
    assert (video["model"], video["size"], video["seconds"]) == (
        "sora-2-pro-2025-10-06",
        "1920x1080",
        "20",
    )


@pytest.mark.parametrize(("image_format", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
async def test_multipart_create_with_an_image_reference(
    client: httpx.AsyncClient, image_format: str, mime: str
) -> None:
    files: dict[str, Any] = {
        "prompt": (None, "the fox wakes"),
        "size": (None, "1280x720"),
        "input_reference": ("first.img", image_bytes(1280, 720, image_format), mime),
    }
    response = await client.post("/v1/videos", files=files, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["size"] == "1280x720"


async def test_webp_reference_with_the_default_size(client: httpx.AsyncClient) -> None:
    files: dict[str, Any] = {
        "prompt": (None, "p"),
        "input_reference": ("first.webp", image_bytes(720, 1280, "WEBP"), "image/webp"),
    }
    response = await client.post("/v1/videos", files=files, headers=AUTH)
    assert response.status_code == 200, response.text


PNG_1280X720 = image_bytes(1280, 720, "PNG")

BAD_CREATES: list[tuple[str, dict[str, object], dict[str, object]]] = [
    (
        "json",
        {"prompt": "p", "seconds": 8},
        error(
            "Invalid type for 'seconds': expected one of '4', '8', '12', '16', or '20', "
            "but got an integer instead.",
            "seconds",
            "invalid_type",
        ),
    ),
    (
        "json",
        {"prompt": "p", "seconds": "10"},
        error(
            "Invalid value: '10'. Supported values are: '4', '8', '12', '16', and '20'.",
            "seconds",
            "invalid_value",
        ),
    ),
    (
        "form",
        {"prompt": "p", "seconds": "5"},
        error(
            "Invalid value: '5'. Supported values are: '4', '8', '12', '16', and '20'.",
            "seconds",
            "invalid_value",
        ),
    ),
    (
        "json",
        {"prompt": "p", "size": "1792x1024"},
        error(
            "Invalid value: '1792x1024' for model 'sora-2'. Supported values are: '720x1280' "
            "and '1280x720'.",
            "size",
            "invalid_value",
        ),
    ),
    (
        "json",
        {"prompt": "p", "model": "sora-2-pro", "size": "1024x1024"},
        error(
            "Invalid value: '1024x1024'. Supported values are: '720x1280', '1280x720', "
            "'1024x1792', '1792x1024', '1080x1920', and '1920x1080'.",
            "size",
            "invalid_value",
        ),
    ),
    (
        "json",
        {"prompt": "p", "model": "sora-1"},
        error(
            "Invalid value: 'sora-1'. Supported values are: 'sora-2', 'sora-2-pro', "
            "'sora-2-2025-10-06', 'sora-2-pro-2025-10-06', and 'sora-2-2025-12-08'.",
            "model",
            "invalid_value",
        ),
    ),
    (
        "json",
        {"prompt": "p", "width": 1280, "height": 720},
        error("Unknown parameter: 'width'.", "width", "unknown_parameter"),
    ),
    (
        "form",
        {"prompt": "p", "n": "2"},
        error("Unknown parameter: 'n'.", "n", "unknown_parameter"),
    ),
    (
        "json",
        {"model": "sora-2"},
        error("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"),
    ),
    (
        "json",
        {"prompt": ""},
        error(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            "prompt",
            "empty_string",
        ),
    ),
    (
        "json",
        {"prompt": "x" * 32001},
        error(
            "Invalid 'prompt': string too long. Expected a string with maximum length 32000, "
            "but got a string with length 32001 instead.",
            "prompt",
            "string_above_max_length",
        ),
    ),
    (
        "form",
        {"prompt": "p", "input_reference": "https://example.com/first.png"},
        error(
            "Invalid type for 'input_reference': expected a file, but got a string instead.",
            "input_reference",
            "invalid_type",
        ),
    ),
    (
        "form",
        {"prompt": "p", "input_reference": ("ref.png", PNG_1280X720, "image/png")},
        error(
            "Inpaint image must match the requested width and height",
            "input_reference",
            "invalid_value",
        ),
    ),
    (
        "form",
        {"prompt": "p", "input_reference": ("ref.txt", b"not an image", "text/plain")},
        error(
            "Invalid file format for 'input_reference'. Supported formats are: "
            "'image/jpeg', 'image/png', and 'image/webp'.",
            "input_reference",
            "invalid_value",
        ),
    ),
]


@pytest.mark.parametrize(("kind", "body", "expected"), BAD_CREATES)
async def test_bad_create_bodies_are_400_with_the_exact_envelope(
    client: httpx.AsyncClient, kind: str, body: dict[str, object], expected: dict[str, object]
) -> None:
    if kind == "json":
        response = await client.post("/v1/videos", json=body, headers=AUTH)
    else:
        files: dict[str, Any] = {
            k: v if isinstance(v, tuple) else (None, v) for k, v in body.items()
        }
        response = await client.post("/v1/videos", files=files, headers=AUTH)
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 400
    assert response.json() == expected
    assert await creates(client) == []


async def test_unparsable_json_and_unsupported_content_types(client: httpx.AsyncClient) -> None:
    broken = await client.post(
        "/v1/videos", content=b'{"prompt": ', headers=AUTH | {"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["message"].startswith(
        "We could not parse the JSON body of your request."
    )
    text = await client.post(
        "/v1/videos", content=b"prompt=p", headers=AUTH | {"Content-Type": "text/plain"}
    )
    assert text.status_code == 400
    assert text.json()["error"]["message"].startswith("Unsupported content type: 'text/plain'.")
    listed = await client.post("/v1/videos", json=["prompt"], headers=AUTH)
    assert listed.status_code == 400
    assert await creates(client) == []


# --- retrieve and the timeline ------------------------------------------------------------------


async def test_retrieve_follows_the_timeline_to_completion(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    video_id = (await create(client, size="1280x720", seconds="8"))["id"]
    seen: list[tuple[str, int, str | None]] = []
    # Dyadic steps: the sums are exact in binary floating point.
    for step in (0.0, 0.25, 0.25, 1.5, 1.5, 1.5, 1.375, 0.0625, 0.03125, 0.03125, 100.0):
        clock.advance(step)
        response = await client.get(f"/v1/videos/{video_id}", headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == VIDEO_KEYS
        seen.append(
            (body["status"], body["progress"], response.headers.get("openai-poll-after-ms"))
        )
        if body["status"] == "completed":
            done = math.ceil(START_WALL + QUEUE + GENERATION)
            assert (body["completed_at"], body["expires_at"]) == (done, done + 3600)
        else:
            assert (body["completed_at"], body["expires_at"]) == (None, None)
    assert seen == [
        ("queued", 0, "750"),
        ("queued", 0, "750"),
        ("in_progress", 1, "750"),
        ("in_progress", 25, "750"),
        ("in_progress", 50, "750"),
        ("in_progress", 75, "750"),
        ("in_progress", 97, "750"),
        ("in_progress", 98, "750"),
        ("in_progress", 99, "750"),
        ("completed", 100, None),
        ("completed", 100, None),
    ]


async def test_unknown_video_is_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/videos/video_missing"),
        ("GET", "/v1/videos/video_missing/content"),
        ("DELETE", "/v1/videos/video_missing"),
    ]:
        response = await client.request(method, path, headers=AUTH)
        assert response.status_code == 404
        assert response.json() == error(
            "Video with id 'video_missing' not found.", None, "not_found"
        )


async def test_unknown_route_is_an_invalid_url_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/videos/video_1/file", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == error("Invalid URL (GET /v1/videos/video_1/file)")


# --- content ------------------------------------------------------------------------------------


async def test_content_and_delete_wait_for_completion(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    video_id = (await create(client))["id"]
    clock.advance(QUEUE + 1)
    content = await client.get(f"/v1/videos/{video_id}/content", headers=AUTH)
    assert content.status_code == 409
    assert content.json()["error"]["code"] == "video_not_ready"
    deleted = await client.delete(f"/v1/videos/{video_id}", headers=AUTH)
    assert deleted.status_code == 409
    assert deleted.json()["error"]["code"] == "video_not_finished"
    still = await client.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert still.json()["status"] == "in_progress"


async def test_invalid_variant_is_400(client: httpx.AsyncClient, clock: FakeClock) -> None:
    video_id = (await create(client))["id"]
    clock.advance(QUEUE + GENERATION)
    response = await client.get(
        f"/v1/videos/{video_id}/content", params={"variant": "mp4"}, headers=AUTH
    )
    assert response.status_code == 400
    assert response.json() == error(
        "Invalid value: 'mp4'. Supported values are: 'video', 'thumbnail', and 'spritesheet'.",
        "variant",
        "invalid_value",
    )


async def test_download_every_variant(
    client: httpx.AsyncClient, clock: FakeClock, asset_dir: Path
) -> None:
    video_id = (await create(client, size="1280x720", seconds="4"))["id"]
    clock.advance(QUEUE + GENERATION)
    binary = AUTH | {"Accept": "application/binary"}
    url = f"/v1/videos/{video_id}/content"

    video = await client.get(url, headers=binary)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    default = await client.get(url, params={"variant": "video"}, headers=binary)
    assert default.content == video.content
    with av.open(io.BytesIO(video.content), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
        assert stream.duration is not None
        assert stream.time_base is not None
        duration = float(stream.duration * stream.time_base)
    assert (frames[0].width, frames[0].height) == (1280, 720)
    assert frames[0].format.name == "yuv420p"
    assert abs(len(frames) - 4 * 12) <= 1
    assert abs(duration - 4.0) <= 1 / 12
    first, last = bytes(frames[0].planes[0]), bytes(frames[-1].planes[0])
    assert first != last  # it moves
    assert len(set(first[:1280])) > 16  # and is not a flat colour

    thumbnail = await client.get(url, params={"variant": "thumbnail"}, headers=binary)
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumbnail.content)) as image:
        assert (image.format, image.size) == ("WEBP", (1280, 720))

    sprites = await client.get(url, params={"variant": "spritesheet"}, headers=binary)
    assert sprites.status_code == 200
    assert sprites.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(sprites.content)) as image:
        assert image.format == "JPEG"
        assert image.width > image.height

    cached = sorted(path.name for path in asset_dir.iterdir())
    assert cached == [
        "p1-spritesheet-1280x720-4s-12fps.jpg",
        "p1-thumbnail-1280x720-4s-12fps.webp",
        "p1-video-1280x720-4s-12fps.mp4",
    ]
    assert (asset_dir / cached[2]).read_bytes() == video.content


async def test_delete_a_completed_video(client: httpx.AsyncClient, clock: FakeClock) -> None:
    video_id = (await create(client))["id"]
    clock.advance(QUEUE + GENERATION)
    response = await client.delete(f"/v1/videos/{video_id}", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"id": video_id, "object": "video.deleted", "deleted": True}
    for method, path in [
        ("GET", f"/v1/videos/{video_id}"),
        ("GET", f"/v1/videos/{video_id}/content"),
        ("DELETE", f"/v1/videos/{video_id}"),
    ]:
        assert (await client.request(method, path, headers=AUTH)).status_code == 404


# --- accounting ---------------------------------------------------------------------------------


async def test_control_creates_records_each_accepted_create(client: httpx.AsyncClient) -> None:
    first = await client.post(
        "/v1/videos",
        json={"prompt": "one", "size": "1280x720", "seconds": "8"},
        headers=AUTH | {"X-Client-Request-Id": "job_1", "Idempotency-Key": "job_1-key"},
    )
    refused = await client.post(
        "/v1/videos",
        json={"prompt": "two", "seconds": "7"},
        headers=AUTH | {"X-Client-Request-Id": "job_2"},
    )
    second = await client.post(
        "/v1/videos",
        files={"prompt": (None, "three"), "model": (None, "sora-2-pro")},
        headers=AUTH,
    )
    assert (first.status_code, refused.status_code, second.status_code) == (200, 400, 200)
    assert await creates(client) == [
        {
            "video_id": first.json()["id"],
            "kind": "create",
            "client_request_id": "job_1",
            "idempotency_key": "job_1-key",
            "content_type": "application/json",
            "model": "sora-2",
            "size": "1280x720",
            "seconds": "8",
            "created_at": int(START_WALL),
            "source_video_id": None,
            "dropped": False,
        },
        {
            "video_id": second.json()["id"],
            "kind": "create",
            "client_request_id": None,
            "idempotency_key": None,
            "content_type": "multipart/form-data",
            "model": "sora-2-pro",
            "size": "720x1280",
            "seconds": "4",
            "created_at": int(START_WALL),
            "source_video_id": None,
            "dropped": False,
        },
    ]


# --- the asset cache ----------------------------------------------------------------------------


class BlockingRenderer:
    """Counts renders and holds each one until released, so callers overlap for certain."""

    def __init__(self) -> None:
        self.calls: list[AssetKey] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: AssetKey) -> bytes:
        self.calls.append(key)
        self.started.set()
        assert self.release.wait(10)
        return f"{key.variant}:{key.width}x{key.height}:{key.seconds}".encode()


async def test_concurrent_requests_share_one_generation(tmp_path: Path) -> None:
    renderer = BlockingRenderer()
    cache = AssetCache(fps=12, asset_dir=tmp_path, renderer=renderer)
    waiters = [asyncio.create_task(cache.get("video", 1280, 720, 4)) for _ in range(3)]
    assert await asyncio.to_thread(renderer.started.wait, 10)
    assert not any(waiter.done() for waiter in waiters)
    renderer.release.set()
    assets = await asyncio.gather(*waiters)
    assert len(renderer.calls) == 1
    assert {asset.data for asset in assets} == {b"video:1280x720:4"}
    assert {asset.media_type for asset in assets} == {"video/mp4"}
    again = await cache.get("video", 1280, 720, 4)
    assert again.data == b"video:1280x720:4"
    assert len(renderer.calls) == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_generation(tmp_path: Path) -> None:
    renderer = BlockingRenderer()
    cache = AssetCache(fps=12, asset_dir=None, renderer=renderer)
    impatient = asyncio.create_task(cache.get("thumbnail", 720, 1280, 8))
    patient = asyncio.create_task(cache.get("thumbnail", 720, 1280, 8))
    assert await asyncio.to_thread(renderer.started.wait, 10)
    impatient.cancel()
    renderer.release.set()
    asset = await patient
    assert asset.data == b"thumbnail:720x1280:8"
    assert asset.media_type == "image/webp"
    assert impatient.cancelled()
    assert len(renderer.calls) == 1


async def test_asset_dir_survives_a_restart(tmp_path: Path) -> None:
    renderer = BlockingRenderer()
    renderer.release.set()
    first = await AssetCache(fps=12, asset_dir=tmp_path, renderer=renderer).get(
        "spritesheet", 1280, 720, 12
    )

    def must_not_render(key: AssetKey) -> bytes:
        raise AssertionError(f"rendered {key} although it is on disk")

    restarted = AssetCache(fps=12, asset_dir=tmp_path, renderer=must_not_render)
    again = await restarted.get("spritesheet", 1280, 720, 12)
    assert again == first
    assert [path.suffix for path in tmp_path.iterdir()] == [".jpg"]


# --- the entry point ----------------------------------------------------------------------------


async def test_module_entry_point_serves_healthz(tmp_path: Path) -> None:
    env = os.environ | {"CLIPLINE_SIM_HOST": "127.0.0.1", "CLIPLINE_SIM_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.simulator",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        port = None
        async with asyncio.timeout(20):
            while port is None:
                line = (await process.stderr.readline()).decode()
                assert line, "simulator exited before it was listening"
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
                port = int(found.group(1)) if found else None
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)


def test_module_entry_point_logs_through_shared_logs(tmp_path: Path) -> None:
    """JSON lines into the size-capped file of shared.logs, uvicorn's own lines included (it
    installs no handlers of its own), and nothing left on stderr."""
    port = free_port()
    log_file = tmp_path / "simulator.jsonl"
    env = {
        "CLIPLINE_SIM_HOST": LOOPBACK,
        "CLIPLINE_SIM_PORT": str(port),
        "CLIPLINE_LOG_FORMAT": "json",
        "CLIPLINE_LOG_FILE": str(log_file),
        "CLIPLINE_LOG_MAX_BYTES": "100000",
    }
    argv = [sys.executable, "-m", "services.simulator"]
    proc = spawn("simulator", argv, tmp_path / "stderr.log", env, Path(__file__).parents[2])
    try:
        wait_until(http_ok(f"http://{LOOPBACK}:{port}/healthz"), "simulator", 30, proc)
    finally:
        stop_pid(proc.pid)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    running = [line for line in lines if line["message"].startswith("Uvicorn running on")]
    assert [(line["logger"], line["level"]) for line in running] == [("uvicorn.error", "INFO")]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert (tmp_path / "stderr.log").read_text() == ""


def test_log_settings_read_the_service_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_LOG_LEVEL", "warning")
    monkeypatch.setenv("CLIPLINE_LOG_FORMAT", " JSON ")
    assert (LogSettings().log_level, LogSettings().log_format) == ("WARNING", "json")
    monkeypatch.setenv("CLIPLINE_LOG_FORMAT", "")
    assert LogSettings().log_format == "text"
    monkeypatch.setenv("CLIPLINE_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="'text' or 'json'"):
        LogSettings()

"""The simulator's full contract over HTTP: list, remix, edits, extensions, characters, moderation,
rate limits, expiry, fault injection, accounting and webhooks.

Most tests drive the ASGI app with a fake clock (no sleeps); the faults that break connections
run against a real uvicorn server on a free loopback port, served from the test's own loop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from zlib import crc32

import httpx
import openai
import pytest
import uvicorn
from PIL import Image
from pydantic import SecretStr

from services.simulator.app import Simulator, build_app
from services.simulator.assets import AssetCache, AssetKey
from services.simulator.faults import Faults, Generation
from services.simulator.settings import SimulatorSettings
from services.simulator.webhooks import new_secret
from tests.fakes import FakeClock

API_KEY = "sk-sim-api"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUEUE, GENERATION = 1.0, 4.0
DONE = QUEUE + GENERATION


def fake_asset(key: AssetKey) -> bytes:
    """Stand-in bytes: these tests are about the API, not the pictures."""
    return f"{key.variant}:{key.width}x{key.height}:{key.seconds}".encode() * 64


def settings(**overrides: Any) -> SimulatorSettings:
    values: dict[str, Any] = {
        "api_key": SecretStr(API_KEY),
        "queue_seconds": QUEUE,
        "generation_seconds": GENERATION,
        "rate_limit_tier": "off",
    }
    return SimulatorSettings(**(values | overrides))


@asynccontextmanager
async def asgi_client(app: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as http:
        yield http
    await app.aclose()


def make_app(clock: FakeClock | None = None, **overrides: Any) -> Simulator:
    return build_app(
        settings(**overrides),
        clock=clock,
        cache=AssetCache(fps=12, renderer=fake_asset),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(make_app(clock)) as http:
        yield http


async def create(http: httpx.AsyncClient, prompt: str = "a red fox", **body: object) -> str:
    response = await http.post("/v1/videos", json={"prompt": prompt, **body}, headers=AUTH)
    assert response.status_code == 200, response.text
    video_id: str = response.json()["id"]
    return video_id


async def video(http: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def creates(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/control/creates", params=params)
    assert response.status_code == 200
    records: list[dict[str, Any]] = response.json()
    return records


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    found: dict[str, Any] = body["error"]
    return found


# --- list --------------------------------------------------------------------------------------


async def test_list_pages_in_both_orders_with_exact_cursors(client: httpx.AsyncClient) -> None:
    ids = [await create(client, f"clip {n}") for n in range(5)]
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        seen: list[str] = []
        params = {"limit": "2", "order": order}
        pages = []
        while True:
            response = await client.get("/v1/videos", params=params, headers=AUTH)
            assert response.status_code == 200
            page = response.json()
            assert set(page) == {"object", "data", "first_id", "last_id", "has_more"}
            assert page["object"] == "list"
            page_ids = [item["id"] for item in page["data"]]
            assert (page["first_id"], page["last_id"]) == (page_ids[0], page_ids[-1])
            assert all(len(item) == 13 for item in page["data"])
            pages.append((len(page_ids), page["has_more"]))
            seen += page_ids
            if not page["has_more"]:
                break
            params["after"] = page["last_id"]
        assert seen == expected
        assert pages == [(2, True), (2, True), (1, False)]


async def test_list_defaults_to_newest_first_and_skips_deleted(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    ids = [await create(client, f"clip {n}") for n in range(3)]
    clock.advance(DONE)
    assert (await client.delete(f"/v1/videos/{ids[1]}", headers=AUTH)).status_code == 200
    listed = (await client.get("/v1/videos", headers=AUTH)).json()
    assert [item["id"] for item in listed["data"]] == [ids[2], ids[0]]
    assert listed["has_more"] is False
    after_deleted = await client.get(
        "/v1/videos", params={"after": ids[1], "order": "asc"}, headers=AUTH
    )
    assert [item["id"] for item in after_deleted.json()["data"]] == [ids[2]]


async def test_empty_list_and_bad_queries(client: httpx.AsyncClient) -> None:
    empty = (await client.get("/v1/videos", headers=AUTH)).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}  # fmt: skip
    for params, param in [({"limit": "101"}, "limit"), ({"order": "up"}, "order"),
                          ({"after": "video_nope"}, "after")]:  # fmt: skip
        response = await client.get("/v1/videos", params=params, headers=AUTH)
        assert response.status_code == 400
        assert error_of(response)["param"] == param


# --- remix, edits, extensions ------------------------------------------------------------------


async def test_remix_of_a_completed_video(client: httpx.AsyncClient, clock: FakeClock) -> None:
    source = await create(client, size="1280x720", seconds="8", model="sora-2-pro")
    early = await client.post(f"/v1/videos/{source}/remix", json={"prompt": "p"}, headers=AUTH)
    assert early.status_code == 409
    assert error_of(early)["code"] == "video_not_ready"
    clock.advance(DONE)
    response = await client.post(
        f"/v1/videos/{source}/remix",
        json={"prompt": "same scene, at night"},
        headers=AUTH | {"X-Client-Request-Id": "remix-1"},
    )
    assert response.status_code == 200
    remix = response.json()
    assert len(remix) == 13
    assert remix["remixed_from_video_id"] == source
    assert (remix["status"], remix["progress"]) == ("queued", 0)
    assert (remix["model"], remix["size"], remix["seconds"]) == ("sora-2-pro", "1280x720", "8")
    assert remix["prompt"] == "same scene, at night"
    record = (await creates(client, client_request_id="remix-1"))[0]
    assert (record["kind"], record["source_video_id"], record["video_id"]) == (
        "remix",
        source,
        remix["id"],
    )
    missing = await client.post("/v1/videos/video_nope/remix", json={"prompt": "p"}, headers=AUTH)
    assert missing.status_code == 404


async def test_edits_by_id_in_json_and_brackets(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    source = await create(client, seconds="4")
    clock.advance(DONE)
    by_json = await client.post(
        "/v1/videos/edits", json={"prompt": "make it snow", "video": {"id": source}}, headers=AUTH
    )
    by_form = await client.post(
        "/v1/videos/edits",
        files={"prompt": (None, "make it rain"), "video[id]": (None, source)},
        headers=AUTH,
    )
    for response in (by_json, by_form):
        assert response.status_code == 200, response.text
        edited = response.json()
        assert (edited["size"], edited["seconds"], edited["remixed_from_video_id"]) == (
            "720x1280",
            "4",
            None,
        )
    kinds = [(r["kind"], r["content_type"]) for r in await creates(client)]
    assert kinds == [
        ("create", "application/json"),
        ("edit", "application/json"),
        ("edit", "multipart/form-data"),
    ]


async def test_extensions_stitch_the_total_and_stop_at_the_limits(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    current = await create(client, seconds="20")
    totals = []
    for _ in range(5):
        clock.advance(DONE)
        response = await client.post(
            "/v1/videos/extensions",
            json={"prompt": "and then", "seconds": "20", "video": {"id": current}},
            headers=AUTH,
        )
        assert response.status_code == 200, response.text
        current = response.json()["id"]
        totals.append(response.json()["seconds"])
    assert totals == ["40", "60", "80", "100", "120"]
    clock.advance(DONE)
    too_long = await client.post(
        "/v1/videos/extensions",
        json={"prompt": "more", "seconds": "4", "video": {"id": current}},
        headers=AUTH,
    )
    assert too_long.status_code == 400
    assert error_of(too_long)["param"] == "seconds"
    no_seconds = await client.post(
        "/v1/videos/extensions", json={"prompt": "more", "video": {"id": current}}, headers=AUTH
    )
    assert error_of(no_seconds)["code"] == "missing_required_parameter"


async def test_launch_contract_has_no_edits_and_only_three_durations(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock, contract="2025-10")) as http:
        for path in ("/v1/videos/edits", "/v1/videos/extensions", "/v1/videos/characters"):
            response = await http.post(path, json={"prompt": "p"}, headers=AUTH)
            assert response.status_code == 404
            assert error_of(response)["message"] == f"Invalid URL (POST {path})"
        bad = await http.post("/v1/videos", json={"prompt": "p", "seconds": "16"}, headers=AUTH)
        assert error_of(bad)["message"] == (
            "Invalid value: '16'. Supported values are: '4', '8', and '12'."
        )


# --- characters --------------------------------------------------------------------------------


async def test_characters_are_created_from_a_video_and_usable_on_create(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/videos/characters",
        files={"name": (None, "Mossy"), "video": ("mossy.mp4", b"\x00\x00\x00\x18ftypmp42")},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    character = response.json()
    assert set(character) == {"id", "name", "created_at"}
    assert character["id"].startswith("char_")
    fetched = await client.get(f"/v1/videos/characters/{character['id']}", headers=AUTH)
    assert fetched.json() == character
    used = await client.post(
        "/v1/videos",
        json={"prompt": "Mossy waves", "characters": [{"id": character["id"]}]},
        headers=AUTH,
    )
    assert used.status_code == 200
    unknown = await client.post(
        "/v1/videos", json={"prompt": "p", "characters": [{"id": "char_nope"}]}, headers=AUTH
    )
    assert unknown.status_code == 400
    as_json = await client.post(
        "/v1/videos/characters", json={"name": "Mossy", "video": "x"}, headers=AUTH
    )
    assert as_json.status_code == 400
    assert "only accepts 'multipart/form-data'" in error_of(as_json)["message"]
    missing = await client.get("/v1/videos/characters/char_nope", headers=AUTH)
    assert missing.status_code == 404


# --- failures: moderation and injected -----------------------------------------------------------


async def test_moderated_prompt_fails_after_the_queue(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    video_id = await create(client, "Darth Vader on a skateboard")
    assert (await video(client, video_id))["status"] == "queued"
    clock.advance(QUEUE)
    failed = await video(client, video_id)
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "moderation_blocked",
        "message": "Your request was blocked by our moderation system.",
    }
    assert failed["expires_at"] is None
    content = await client.get(f"/v1/videos/{video_id}/content", headers=AUTH)
    assert (content.status_code, error_of(content)["code"]) == (400, "video_failed")
    assert (await client.delete(f"/v1/videos/{video_id}", headers=AUTH)).status_code == 200


async def test_configured_patterns_replace_the_defaults(clock: FakeClock) -> None:
    app = make_app(clock, moderation_patterns=(r"\bforbidden\b",))
    async with asgi_client(app) as http:
        blocked = await create(http, "a FORBIDDEN dance")
        allowed = await create(http, "Darth Vader on a skateboard")
        clock.advance(DONE)
        assert (await video(http, blocked))["status"] == "failed"
        assert (await video(http, allowed))["status"] == "completed"


async def test_injected_job_failures(client: httpx.AsyncClient, clock: FakeClock) -> None:
    put = await client.put("/control/faults", json={"job_failure_rate": 1.0})
    assert put.status_code == 200
    video_id = await create(client)
    clock.advance(QUEUE + GENERATION / 2)
    assert (await video(client, video_id))["status"] == "in_progress"
    clock.advance(GENERATION / 2)
    failed = await video(client, video_id)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "internal_error"


# --- rate limits -------------------------------------------------------------------------------


async def test_rpm_per_model_with_headers_and_429(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock, rate_limit_tier="1")) as http:
        body = {"prompt": "p", "model": "sora-2-pro"}
        remaining = []
        for _ in range(10):
            ok = await http.post("/v1/videos", json=body, headers=AUTH)
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-limit-requests"] == "10"
            remaining.append(ok.headers["x-ratelimit-remaining-requests"])
        assert remaining == [str(n) for n in range(9, -1, -1)]
        limited = await http.post("/v1/videos", json=body, headers=AUTH)
        assert limited.status_code == 429
        assert (limited.headers["retry-after"], limited.headers["retry-after-ms"]) == ("6", "6000")
        assert limited.headers["x-ratelimit-remaining-requests"] == "0"
        assert limited.headers["x-ratelimit-reset-requests"] == "1m0s"
        error = error_of(limited)
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert len(await creates(http)) == 10
        other_model = await http.post("/v1/videos", json={"prompt": "p"}, headers=AUTH)
        assert other_model.status_code == 200
        assert other_model.headers["x-ratelimit-limit-requests"] == "25"
        clock.advance(6)
        assert (await http.post("/v1/videos", json=body, headers=AUTH)).status_code == 200


async def test_rpm_override_and_retrieve_is_not_limited(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock, rate_limit_tier="1", rpm={"sora-2": 1})) as http:
        video_id = await create(http)
        assert (
            await http.post("/v1/videos", json={"prompt": "p"}, headers=AUTH)
        ).status_code == 429
        for _ in range(5):
            await video(http, video_id)


# --- expiry ------------------------------------------------------------------------------------


async def test_content_expires(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock, expires_after_seconds=600)) as http:
        video_id = await create(http)
        clock.advance(DONE)
        body = await video(http, video_id)
        assert body["expires_at"] == body["completed_at"] + 600
        url = f"/v1/videos/{video_id}/content"
        assert (await http.get(url, headers=AUTH)).status_code == 200
        clock.wall = body["expires_at"] - 0.001
        clock.mono += 1000
        assert (await http.get(url, headers=AUTH)).status_code == 200
        clock.wall = body["expires_at"]
        expired = await http.get(url, headers=AUTH)
        assert expired.status_code == 404
        assert error_of(expired)["code"] == "video_expired"
        assert (await video(http, video_id))["status"] == "completed"


# --- fault control -----------------------------------------------------------------------------


async def test_faults_are_read_replaced_and_validated(client: httpx.AsyncClient) -> None:
    assert (await client.get("/control/faults")).json()["error_rate"] == 0.0
    new = {"seed": 9, "error_rate": 1.0, "error_statuses": [503], "operations": ["retrieve"]}
    put = await client.put("/control/faults", json=new)
    assert put.status_code == 200
    assert {k: put.json()[k] for k in new} == new
    video_id = await create(client)  # create is not in `operations`
    broken = await client.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert broken.status_code == 503
    assert error_of(broken)["type"] == "server_error"
    bad = await client.put("/control/faults", json={"error_rate": 2})
    assert bad.status_code == 400
    assert error_of(bad)["param"] == "error_rate"
    assert (await client.get("/control/faults")).json()["error_statuses"] == [503]


async def test_injected_429_carries_retry_headers(client: httpx.AsyncClient) -> None:
    await client.put(
        "/control/faults", json={"rate_limit_rate": 1.0, "rate_limit_retry_after_ms": 2500}
    )
    response = await client.post("/v1/videos", json={"prompt": "p"}, headers=AUTH)
    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("3", "2500")
    assert error_of(response)["code"] == "rate_limit_exceeded"
    assert await creates(client) == []


async def test_same_seed_same_sequence_of_faults(clock: FakeClock) -> None:
    faults = {"seed": 1234, "error_rate": 0.3, "rate_limit_rate": 0.2}

    async def statuses() -> list[int]:
        async with asgi_client(make_app(clock, faults=Faults.model_validate(faults))) as http:
            return [
                (await http.post("/v1/videos", json={"prompt": "p"}, headers=AUTH)).status_code
                for _ in range(60)
            ]

    first, second = await statuses(), await statuses()
    assert first == second
    assert {200, 429, 500} == set(first)


async def test_generation_time_distribution_from_faults(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    generation = {"queue_seconds": 0, "distribution": "fixed", "seconds": 30}
    await client.put("/control/faults", json={"generation": generation})
    video_id = await create(client)
    clock.advance(29)
    assert (await video(client, video_id))["status"] == "in_progress"
    clock.advance(1)
    assert (await video(client, video_id))["status"] == "completed"


async def test_latency_is_added(clock: FakeClock) -> None:
    app = make_app(clock, faults=Faults(latency_ms=150, operations=("retrieve",)))
    async with asgi_client(app) as http:
        video_id = await create(http)
        started = time.perf_counter()
        await video(http, video_id)
        assert time.perf_counter() - started >= 0.15


async def test_reset_forgets_everything(client: httpx.AsyncClient) -> None:
    video_id = await create(client)
    assert (await client.post("/control/reset")).status_code == 200
    assert await creates(client) == []
    assert (await client.get(f"/v1/videos/{video_id}", headers=AUTH)).status_code == 404


# --- faults that break connections: a real server ------------------------------------------------


@asynccontextmanager
async def serve(app: Simulator) -> AsyncIterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="off")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    try:
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.shutdown()
        await app.aclose()


async def test_dropped_create_is_ambiguous_to_the_client_but_exists_upstream() -> None:
    app = make_app(faults=Faults(drop_after_create_rate=1.0, generation=Generation(seconds=0)))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(httpx.TransportError):
            await http.post(
                "/v1/videos",
                json={"prompt": "p"},
                headers=AUTH | {"X-Client-Request-Id": "job-7"},
            )
        records = await creates(http, client_request_id="job-7")
        assert len(records) == 1
        assert records[0]["dropped"] is True
        listed = (await http.get("/v1/videos", headers=AUTH)).json()
        assert [item["id"] for item in listed["data"]] == [records[0]["video_id"]]


async def test_truncated_and_slow_downloads() -> None:
    zero = Generation(queue_seconds=0, seconds=0)
    app = make_app(faults=Faults(generation=zero, truncate_download_rate=1.0))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        video_id = await create(http)
        with pytest.raises(httpx.TransportError):
            await http.get(f"/v1/videos/{video_id}/content", headers=AUTH)
        slow = {"generation": zero.model_dump(), "download_bytes_per_second": 20_000}
        assert (await http.put("/control/faults", json=slow)).status_code == 200
        started = time.perf_counter()
        response = await http.get(f"/v1/videos/{video_id}/content", headers=AUTH)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        assert response.content == fake_asset(AssetKey("video", 720, 1280, 4, 12))
        assert elapsed >= len(response.content) / 20_000 * 0.9


# --- webhooks ----------------------------------------------------------------------------------


async def test_webhooks_are_signed_retried_and_unwrap_with_the_sdk() -> None:
    secret = new_secret()
    received: asyncio.Queue[httpx.Request] = asyncio.Queue()
    answers = iter([500, 200])  # the first delivery fails, the retry succeeds

    async def receiver(request: httpx.Request) -> httpx.Response:
        await request.aread()
        status = next(answers, 200)
        await received.put(request)
        return httpx.Response(status)

    hook_client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    app = build_app(
        settings(
            queue_seconds=0,
            generation_seconds=0.05,
            webhook_url="https://hooks.example.test/video",
            webhook_secret=SecretStr(secret),
            webhook_backoff_seconds=0.01,
        ),
        cache=AssetCache(fps=12, renderer=fake_asset),
        webhook_client=hook_client,
    )
    async with asgi_client(app) as http:
        video_id = await create(http)
        first = await asyncio.wait_for(received.get(), 10)
        retry = await asyncio.wait_for(received.get(), 10)
        log = (await http.get("/control/webhooks")).json()
    await hook_client.aclose()
    assert first.headers["webhook-id"] == retry.headers["webhook-id"]
    assert first.content == retry.content
    sdk = openai.OpenAI(api_key="unused", webhook_secret=secret)
    event = sdk.webhooks.unwrap(retry.content, dict(retry.headers))
    assert event.type == "video.completed"  # type: ignore[comparison-overlap]
    assert event.data.id == video_id
    payload = json.loads(retry.content)
    assert payload["object"] == "event"
    assert payload["id"].startswith("evt_")
    assert log[0]["state"] in ("delivered", "pending")
    assert log[0]["video_id"] == video_id
    tampered = retry.content.replace(video_id.encode(), b"video_" + b"0" * 48)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(tampered, dict(retry.headers))


async def test_failed_job_sends_video_failed() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def receiver(request: httpx.Request) -> httpx.Response:
        await received.put(await request.aread())
        return httpx.Response(204)

    hook_client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    app = build_app(
        settings(
            queue_seconds=0.01,
            webhook_url="https://hooks.example.test/video",
            webhook_secret=SecretStr(new_secret()),
        ),
        cache=AssetCache(fps=12, renderer=fake_asset),
        webhook_client=hook_client,
    )
    async with asgi_client(app) as http:
        video_id = await create(http, "a moderation test clip")
        payload = json.loads(await asyncio.wait_for(received.get(), 10))
    await hook_client.aclose()
    assert (payload["type"], payload["data"]) == ("video.failed", {"id": video_id})


def test_webhook_url_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        settings(webhook_url="https://hooks.example.test/video")


# --- input_reference still checked in multipart --------------------------------------------------


async def test_text_input_reference_in_multipart_is_the_observed_error(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/videos",
        files={"prompt": (None, "p"), "input_reference": (None, "https://x.test/a.png")},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Invalid type for 'input_reference': expected a file, but got a string "
            "instead.",
            "type": "invalid_request_error",
            "param": "input_reference",
            "code": "invalid_type",
        }
    }


async def test_image_reference_in_multipart_brackets(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/videos",
        files={
            "prompt": (None, "p"),
            "input_reference[image_url]": (None, "https://images.example.test/first.png"),
        },
        headers=AUTH,
    )
    assert response.status_code == 200, response.text


# --- input_reference becomes the first frame ----------------------------------------------------


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def mean_colour(data: bytes) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as image:
        pixel = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return pixel


async def test_uploaded_and_inline_images_become_the_first_frame(clock: FakeClock) -> None:
    red, green = (220, 20, 30), (20, 200, 40)
    app = build_app(settings(small_assets=True), clock=clock)
    async with asgi_client(app) as http:
        uploaded = await http.post(
            "/v1/videos",
            files={
                "prompt": (None, "p"),
                "size": (None, "1280x720"),
                "input_reference": ("first.png", png(1280, 720, red), "image/png"),
            },
            headers=AUTH,
        )
        inline_url = "data:image/png;base64," + base64.b64encode(png(720, 1280, green)).decode()
        inline = await http.post(
            "/v1/videos",
            json={"prompt": "p", "input_reference": {"image_url": inline_url}},
            headers=AUTH,
        )
        plain = await create(http)
        clock.advance(DONE)
        colours = []
        for response in (uploaded, inline):
            assert response.status_code == 200, response.text
            url = f"/v1/videos/{response.json()['id']}/content"
            thumb = await http.get(url, params={"variant": "thumbnail"}, headers=AUTH)
            colours.append(mean_colour(thumb.content))
        plain_thumb = await http.get(
            f"/v1/videos/{plain}/content", params={"variant": "thumbnail"}, headers=AUTH
        )
    assert all(abs(a - b) < 25 for a, b in zip(colours[0], red, strict=True))
    assert all(abs(a - b) < 25 for a, b in zip(colours[1], green, strict=True))
    assert mean_colour(plain_thumb.content) not in colours


async def test_inline_data_url_is_checked_like_a_file(client: httpx.AsyncClient) -> None:
    wrong_size = "data:image/png;base64," + base64.b64encode(png(64, 64, (1, 2, 3))).decode()
    response = await client.post(
        "/v1/videos",
        json={"prompt": "p", "input_reference": {"image_url": wrong_size}},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "input_reference"
    not_an_image = "data:image/png;base64," + base64.b64encode(b"hello").decode()
    response = await client.post(
        "/v1/videos",
        json={"prompt": "p", "input_reference": {"image_url": not_an_image}},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("Invalid file format for 'input_reference'")
    assert await creates(client) == []


# --- strictness: routes, queries, images, settings ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/videos"),
        ("POST", "/v1/videos/video_1"),
        ("HEAD", "/v1/videos"),
        ("GET", "/v1/videos/"),
        ("GET", "/v1/videos//content"),
    ],
)
async def test_other_methods_and_odd_paths_are_invalid_urls(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path, headers=AUTH)
    assert response.status_code == 404
    if method != "HEAD":
        assert error_of(response)["message"] == f"Invalid URL ({method} {path})"


async def test_blank_and_loose_query_values_are_refused(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    video_id = await create(client)
    clock.advance(DONE)
    blank = await client.get(f"/v1/videos/{video_id}/content?variant=", headers=AUTH)
    assert error_of(blank)["message"] == (
        "Invalid value: ''. Supported values are: 'video', 'thumbnail', and 'spritesheet'."
    )
    for query in ("limit=", "limit=1_0", "limit=2.0"):
        response = await client.get(f"/v1/videos?{query}", headers=AUTH)
        assert response.status_code == 400, query
        assert error_of(response)["code"] == "invalid_type"


async def test_bracket_data_urls_are_checked_too(client: httpx.AsyncClient) -> None:
    small = "data:image/png;base64," + base64.b64encode(png(10, 10, (1, 2, 3))).decode()
    wrong_size = await client.post(
        "/v1/videos",
        files={"prompt": (None, "p"), "input_reference[image_url]": (None, small)},
        headers=AUTH,
    )
    assert wrong_size.status_code == 400
    assert error_of(wrong_size)["param"] == "input_reference"
    garbled = await client.post(
        "/v1/videos",
        json={"prompt": "p", "input_reference": {"image_url": "data:image/png;base64,@@@"}},
        headers=AUTH,
    )
    assert garbled.status_code == 400
    assert error_of(garbled)["param"] == "input_reference.image_url"
    assert await creates(client) == []


def bomb_png() -> bytes:
    """A PNG header claiming 100000 x 100000 pixels, with no pixel data."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", crc32(chunk))


@pytest.mark.parametrize(
    "image", [bomb_png(), png(720, 1280, (9, 9, 9))[:200]], ids=["bomb", "truncated"]
)
async def test_images_that_do_not_decode_are_refused(
    client: httpx.AsyncClient, image: bytes
) -> None:
    response = await client.post(
        "/v1/videos",
        files={"prompt": (None, "p"), "input_reference": ("x.png", image, "image/png")},
        headers=AUTH,
    )
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("Invalid file format for 'input_reference'")


async def test_camera_jpegs_are_jpegs(client: httpx.AsyncClient) -> None:
    out = io.BytesIO()
    frames = [Image.new("RGB", (720, 1280), (10, 10, 10)), Image.new("RGB", (720, 1280))]
    frames[0].save(out, format="MPO", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(out.getvalue())) as probe:
        assert probe.format == "MPO"
    response = await client.post(
        "/v1/videos",
        files={"prompt": (None, "p"), "input_reference": ("c.jpg", out.getvalue(), "image/jpeg")},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text


async def test_attempts_record_refused_creates_too(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock, rate_limit_tier="1", rpm={"sora-2": 1})) as http:
        for _ in range(2):
            await http.post(
                "/v1/videos",
                json={"prompt": "p"},
                headers=AUTH | {"X-Client-Request-Id": "job-9", "Idempotency-Key": "job-9"},
            )
        await http.post("/v1/videos", json={"prompt": "p"})
        await http.get("/v1/videos", headers=AUTH)
        attempts = (await http.get("/control/attempts")).json()
        mine = (await http.get("/control/attempts?client_request_id=job-9")).json()
    assert [(a["operation"], a["status"]) for a in attempts] == [
        ("create", 200),
        ("create", 429),
        ("create", 401),
    ]
    assert [a["idempotency_key"] for a in mine] == ["job-9", "job-9"]


async def test_videos_list_each_jobs_times_and_retrieves(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock)) as http:
        first = await create(http, "one")
        clock.advance(0.5)
        second = await create(http, "two")
        for _ in range(3):
            await video(http, first)
        await http.get(f"/v1/videos/{first}")  # refused (no key): still a retrieve of it
        await http.get("/v1/videos/video_unknown", headers=AUTH)  # no such video: not listed
        await http.get(f"/v1/videos/{second}/content", headers=AUTH)  # not a retrieve
        clock.advance(DONE - 0.5)
        listed = {v["id"]: v for v in (await http.get("/control/videos")).json()}
        await http.post("/control/reset")
        after = (await http.get("/control/videos")).json()
    start = clock.wall - DONE
    assert listed == {
        first: {"id": first, "status": "completed", "created_at": start,
                "finishes_at": start + DONE, "retrieves": 4},
        second: {"id": second, "status": "in_progress", "created_at": start + 0.5,
                 "finishes_at": start + 0.5 + DONE, "retrieves": 0},
    }  # fmt: skip
    assert after == []


async def test_the_poll_hint_can_be_turned_off(clock: FakeClock) -> None:
    hinted = make_app(clock, poll_after_ms=750)
    silent = make_app(clock, poll_after_ms="off")  # CLIPLINE_SIM_POLL_AFTER_MS=off
    for app, expected in ((hinted, "750"), (silent, None)):
        async with asgi_client(app) as http:
            response = await http.get(f"/v1/videos/{await create(http)}", headers=AUTH)
        assert response.headers.get("openai-poll-after-ms") == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"rpm": {"sora-2": 0}},
        {"webhook_url": "https://x.test/h", "webhook_secret": SecretStr("whsec_abc")},
        {"generation_seconds": float("inf")},
        {"faults": {"generation": {"seconds": 1e309}}},
    ],
)
def test_unusable_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError
        settings(**overrides)


async def test_oldest_jobs_are_forgotten_beyond_max_jobs(clock: FakeClock) -> None:
    async with asgi_client(make_app(clock, max_jobs=3)) as http:
        ids = [await create(http, f"clip {n}") for n in range(5)]
        listed = (await http.get("/v1/videos", params={"order": "asc"}, headers=AUTH)).json()
        gone = await http.get(f"/v1/videos/{ids[0]}", headers=AUTH)
        assert len(await creates(http)) == 5
    assert [item["id"] for item in listed["data"]] == ids[2:]
    assert gone.status_code == 404

"""Upstream video ids: checked against the contract's pattern wherever one enters (answers,
listings, ids handed to the adapter) and path-escaped in every URL, so no id reaches another
endpoint with the upstream API key."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

import httpx
import pytest

from services.simulator.domain import VIDEO_ID_BYTES, new_video_id
from shared.provider import CreateVideo, OpenAIVideosProvider, ProviderInvalidId
from shared.provider import ids as provider_ids
from shared.provider.downloads import AiohttpDownloads
from shared.provider.ids import checked_video_id, is_valid_video_id, video_path

VALID = [
    "video_68d7512d07848190b3e45da0ecbebcde004da08e1e0678d5",  # the reference's example
    new_video_id(secrets.token_bytes(VIDEO_ID_BYTES)),  # what the simulator makes
    "video_abc",
    "video_other_7",
    "video_A-b_9",
]
INVALID = [
    "",
    "video_",
    "video",
    "VIDEO_abc",
    "../files/x",
    "video_../files/x",
    "video_x/../../files/file_1/content",
    "video_a%2fb",
    "video_a?x=1",
    "video_a#frag",
    "video_a.b",
    "video_a b",
    "video_a\n",
    " video_a",
    "video_\u00e9",  # unicode letters are not id characters
    "video_\uff41",  # a fullwidth 'a'
    "video_\u0663",  # an Arabic-Indic digit: str.isalnum() would say yes
    "video_" + "a" * 201,
]
VIDEO_ID = "video_" + "a" * 48
VIDEO: dict[str, object] = {"id": VIDEO_ID, "object": "video", "status": "queued", "progress": 0}


@pytest.mark.parametrize("video_id", VALID)
def test_valid_ids_pass_and_their_path_is_unchanged(video_id: str) -> None:
    assert is_valid_video_id(video_id)
    assert checked_video_id(video_id, "test") == video_id
    assert video_path(video_id) == f"videos/{video_id}"
    assert video_path(video_id, "content") == f"videos/{video_id}/content"


@pytest.mark.parametrize("video_id", INVALID)
def test_invalid_ids_are_a_typed_error_never_a_path(video_id: str) -> None:
    assert not is_valid_video_id(video_id)
    with pytest.raises(ProviderInvalidId, match="is not a video id"):
        checked_video_id(video_id, "test")
    with pytest.raises(ProviderInvalidId):
        video_path(video_id, "content")


def test_not_a_string_is_no_id() -> None:
    assert not is_valid_video_id(None)
    assert not is_valid_video_id(42)


def test_the_error_shows_a_cut_repr_of_the_id() -> None:
    with pytest.raises(ProviderInvalidId) as caught:
        checked_video_id("video_\u00e9" + "x" * 500, "webhook")
    assert caught.value.message.startswith("webhook: 'video_\u00e9")
    assert len(caught.value.message) < 200


def test_the_path_segment_is_escaped_even_if_the_pattern_let_anything_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Escaping is a second guard, independent of the pattern."""
    monkeypatch.setattr(provider_ids, "OPENAI_VIDEO_ID_RE", re.compile(r".+"))
    assert video_path("a/../b?c#d%", "content") == "videos/a%2F..%2Fb%3Fc%23d%25/content"
    assert video_path("\u00e9") == "videos/%C3%A9"


def answering(body: object) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, json=body)


def recording(
    answer: Callable[[httpx.Request], httpx.Response],
) -> tuple[OpenAIVideosProvider, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    client = httpx.AsyncClient(
        base_url="http://up.test/v1/",
        headers={"Authorization": "Bearer sk-test"},
        transport=httpx.MockTransport(handler),
    )
    return OpenAIVideosProvider(client), seen


@pytest.mark.parametrize("video_id", ["../files/x", "video_x/../../files", "video_\u00e9"])
async def test_an_invalid_id_handed_to_the_adapter_sends_nothing(video_id: str) -> None:
    provider, seen = recording(lambda _: httpx.Response(200, json=VIDEO))
    with pytest.raises(ProviderInvalidId):
        await provider.retrieve(video_id)
    with pytest.raises(ProviderInvalidId):
        await provider.delete(video_id)
    with pytest.raises(ProviderInvalidId):
        async with provider.download(video_id, "video"):
            pass
    with pytest.raises(ProviderInvalidId):
        async with AiohttpDownloads("http://upstream.invalid/v1", "sk-test").download(
            video_id, "video"
        ):
            pass
    assert seen == []  # no request left, so the API key went nowhere


async def test_valid_ids_reach_their_own_endpoints() -> None:
    video_id = VIDEO_ID
    provider, seen = recording(lambda _: httpx.Response(200, json=VIDEO))
    await provider.retrieve(video_id)
    await provider.delete(video_id)
    async with provider.download(video_id, "thumbnail"):
        pass
    assert [(r.method, r.url.raw_path.decode()) for r in seen] == [
        ("GET", f"/v1/videos/{video_id}"),
        ("DELETE", f"/v1/videos/{video_id}"),
        ("GET", f"/v1/videos/{video_id}/content?variant=thumbnail"),
    ]


@pytest.mark.parametrize("bad", ["video_../files/x", "video_\u00e9", "files/x"])
async def test_a_create_answered_with_an_invalid_id_is_a_typed_error(bad: str) -> None:
    provider, _ = recording(lambda _: httpx.Response(200, json=VIDEO | {"id": bad}))
    with pytest.raises(ProviderInvalidId, match="create answer"):
        await provider.create(CreateVideo("sora-2", "1280x720", 4, "p", "job_1"))


async def test_a_retrieve_answered_about_another_or_an_invalid_video_is_a_typed_error() -> None:
    for answered in ("video_someone_else", "video_../x"):
        provider, _ = recording(answering(VIDEO | {"id": answered}))
        with pytest.raises(ProviderInvalidId, match="retrieve answer"):
            await provider.retrieve(VIDEO_ID)


async def test_a_listing_leaves_out_videos_whose_id_is_invalid() -> None:
    data = [
        VIDEO | {"id": i} for i in ("video_new", "video_../files/x", "video_\u00e9", "video_old")
    ]
    provider, _ = recording(lambda _: httpx.Response(200, json={"data": data, "has_more": False}))
    assert [v.id for v in await provider.recent()] == ["video_new", "video_old"]

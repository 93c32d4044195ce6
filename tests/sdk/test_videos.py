"""The simulator through the official openai SDK: create, retrieve, list, delete, content, remix,
polling and typed errors. The same tests run under the 2.x and the latest SDK."""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Callable
from typing import Literal

import av
import openai
import pytest
from openai.types import Video
from PIL import Image

from tests.images import image_bytes
from tests.sdk.harness import (
    MARKS,
    OPENAI_MAJOR,
    POLL_AFTER_MS,
    TEXT_ONLY_CREATE,
    RequestLog,
    Sdk,
    Simulator,
    error_body,
    sdk_client,
    unchecked,
    unique,
)

pytestmark = list(MARKS)

VIDEO_ID = re.compile(r"video_[0-9a-f]{48}")
Variant = Literal["video", "thumbnail", "spritesheet"]


# --- which SDK, and what it sends -------------------------------------------------------------


def test_runs_the_sdk_this_run_expects(sdk: Sdk) -> None:
    assert openai.__version__ == sdk.version
    assert sdk.major == OPENAI_MAJOR
    assert sdk.major in TEXT_ONLY_CREATE, f"no wire-shape expectation for openai {sdk.version}"
    # The 2026-03 methods exist in the latest SDK only.
    assert hasattr(openai.resources.videos.Videos, "extend") == (sdk.major >= 3)


def test_text_only_create_arrives_in_the_sdks_wire_shape(
    client: openai.OpenAI, simulator: Simulator, sdk: Sdk
) -> None:
    prompt = unique("a paper boat drifting down a rain-soaked street")
    video = client.videos.create(prompt=prompt)

    assert VIDEO_ID.fullmatch(video.id), video.id
    assert (video.object, video.status, video.progress) == ("video", "queued", 0)
    assert (video.model, video.seconds, video.size, video.prompt) == (
        "sora-2",
        "4",
        "720x1280",
        prompt,
    )
    assert video.completed_at is None
    assert video.expires_at is None
    assert video.remixed_from_video_id is None
    assert video.error is None
    record = simulator.create_record(video.id)
    assert record["kind"] == "create"
    assert record["content_type"] == TEXT_ONLY_CREATE[sdk.major]


def test_create_echoes_model_size_and_seconds(client: openai.OpenAI, simulator: Simulator) -> None:
    video = client.videos.create(
        prompt=unique("a glacier calving"), model="sora-2-pro", size="1792x1024", seconds="8"
    )
    assert (video.model, video.size, video.seconds) == ("sora-2-pro", "1792x1024", "8")
    record = simulator.create_record(video.id)
    assert (record["model"], record["size"], record["seconds"]) == ("sora-2-pro", "1792x1024", "8")


@pytest.mark.parametrize(
    ("image_format", "filename", "media_type"),
    [("PNG", "first-frame.png", "image/png"), ("JPEG", "first-frame.jpg", "image/jpeg")],
)
def test_create_with_an_input_reference_file(
    client: openai.OpenAI,
    simulator: Simulator,
    image_format: str,
    filename: str,
    media_type: str,
) -> None:
    frame = image_bytes(1280, 720, image_format)
    video = client.videos.create(
        prompt=unique("the first frame comes to life"),
        size="1280x720",
        input_reference=(filename, frame, media_type),
    )
    assert (video.status, video.size) == ("queued", "1280x720")
    record = simulator.create_record(video.id)
    assert record["kind"] == "create"
    assert record["content_type"] == "multipart/form-data"  # a file goes multipart in every SDK
    assert client.videos.poll(video.id).status == "completed"


def test_input_reference_of_another_size_is_refused(
    client: openai.OpenAI, simulator: Simulator
) -> None:
    before = len(simulator.creates())
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(
            prompt=unique("a mismatched first frame"),
            size="1280x720",
            input_reference=("frame.png", image_bytes(720, 1280), "image/png"),
        )
    assert caught.value.status_code == 400
    body = error_body(caught.value)
    assert body["param"] == "input_reference"
    assert body["type"] == "invalid_request_error"
    assert body["message"]
    assert len(simulator.creates()) == before, "a refused create was recorded"


# --- retrieve, poll, list, delete -------------------------------------------------------------


def test_retrieve_until_completed(client: openai.OpenAI) -> None:
    video = client.videos.create(prompt=unique("a heron taking off"))

    raw = client.videos.with_raw_response.retrieve(video.id)
    assert raw.headers["openai-poll-after-ms"] == str(POLL_AFTER_MS)
    unfinished = raw.parse()
    assert unfinished.id == video.id
    assert unfinished.status in ("queued", "in_progress")
    assert unfinished.prompt == video.prompt

    done = client.videos.poll(video.id)
    assert (done.id, done.status, done.progress, done.error) == (video.id, "completed", 100, None)
    assert done.completed_at is not None
    assert done.completed_at >= done.created_at
    assert done.expires_at is not None
    assert done.expires_at > done.completed_at

    final = client.videos.with_raw_response.retrieve(video.id)
    assert "openai-poll-after-ms" not in final.headers
    assert final.parse().status == "completed"


def test_create_and_poll_honours_openai_poll_after_ms(simulator: Simulator) -> None:
    log = RequestLog()
    with sdk_client(simulator, http_client=log.http_client()) as client:
        video = client.videos.create_and_poll(prompt=unique("a kite over dunes"))

    assert video.status == "completed"
    polls = [s for s in log.sent if s.method == "GET" and s.path == f"/v1/videos/{video.id}"]
    assert all(s.headers.get("x-stainless-poll-helper") == "true" for s in polls)
    assert not any("x-stainless-custom-poll-interval" in s.headers for s in polls)
    # 0.8 s of queue and generation: about six polls at 150 ms, one or two at the 1 s fallback.
    assert len(polls) >= 4, [round(s.at, 3) for s in polls]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(polls)]
    assert min(gaps) >= POLL_AFTER_MS / 1000, gaps
    assert max(gaps) < 0.5, gaps  # far from the SDK's 1000 ms default


def _ours(ids: list[str], listed: list[str]) -> list[str]:
    wanted = set(ids)
    return [video_id for video_id in listed if video_id in wanted]


def test_list_auto_pages_in_both_orders(client: openai.OpenAI) -> None:
    ids = [client.videos.create(prompt=unique(f"list clip {n}")).id for n in range(5)]

    ascending = [video.id for video in client.videos.list(limit=2, order="asc")]
    descending = [video.id for video in client.videos.list(limit=2, order="desc")]

    for listed in (ascending, descending):
        assert len(listed) == len(set(listed)), "a video was listed twice"
    assert _ours(ids, ascending) == ids
    assert _ours(ids, descending) == ids[::-1]
    assert descending == ascending[::-1]
    assert descending[:5] == ids[::-1]  # nothing was created after them
    default = client.videos.list(limit=5)  # newest first by default
    assert [video.id for video in default.data] == ids[::-1]


def test_list_pages_by_hand_with_after(client: openai.OpenAI) -> None:
    ids = [client.videos.create(prompt=unique(f"paging clip {n}")).id for n in range(5)]

    first = client.videos.list(limit=2, order="desc")
    assert [video.id for video in first.data] == [ids[4], ids[3]]
    assert (first.has_more, first.last_id) == (True, ids[3])
    second = client.videos.list(limit=2, order="desc", after=ids[3])
    assert [video.id for video in second.data] == [ids[2], ids[1]]
    assert (second.has_more, second.last_id) == (True, ids[1])

    raw = client.videos.with_raw_response.list(limit=2, order="asc", after=ids[2])
    envelope = json.loads(raw.text)
    assert envelope == {
        "object": "list",
        "data": envelope["data"],
        "first_id": ids[3],
        "last_id": ids[4],
        "has_more": False,
    }
    assert [video["id"] for video in envelope["data"]] == [ids[3], ids[4]]
    assert not raw.parse().has_next_page()

    past_the_end = client.videos.list(limit=2, order="asc", after=ids[4])
    assert past_the_end.data == []
    assert past_the_end.has_more is False
    assert past_the_end.last_id is None


def test_delete_a_finished_video(client: openai.OpenAI) -> None:
    video = client.videos.create_and_poll(prompt=unique("a sandcastle at high tide"))
    assert video.status == "completed"

    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)

    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.retrieve(video.id)
    assert caught.value.status_code == 404
    assert error_body(caught.value)["code"] == "not_found"
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert video.id not in {listed.id for listed in client.videos.list(limit=100)}


# --- content ----------------------------------------------------------------------------------


def _is_mp4(data: bytes) -> bool:
    if data[4:8] != b"ftyp":
        return False
    with av.open(io.BytesIO(data)) as container:
        return len(container.streams.video) == 1


def _image_format(expected: str) -> Callable[[bytes], bool]:
    def check(data: bytes) -> bool:
        with Image.open(io.BytesIO(data)) as image:
            return bool(image.format == expected)

    return check


def _is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and _image_format("WEBP")(data)


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff" and _image_format("JPEG")(data)


@pytest.mark.parametrize(
    ("variant", "media_type", "looks_right"),
    [
        ("video", "video/mp4", _is_mp4),
        ("thumbnail", "image/webp", _is_webp),
        ("spritesheet", "image/jpeg", _is_jpeg),
    ],
)
def test_download_content(
    client: openai.OpenAI,
    completed: Video,
    variant: Variant,
    media_type: str,
    looks_right: Callable[[bytes], bool],
) -> None:
    raw = client.videos.with_raw_response.download_content(completed.id, variant=variant)
    assert raw.headers["content-type"].partition(";")[0] == media_type
    content = raw.parse()
    assert looks_right(content.content), content.content[:16]
    assert content.response.headers["content-type"].partition(";")[0] == media_type

    again = client.videos.download_content(completed.id, variant=variant)
    assert again.content == content.content


def test_download_content_defaults_to_the_video(client: openai.OpenAI, completed: Video) -> None:
    content = client.videos.download_content(completed.id)
    assert content.response.headers["content-type"].partition(";")[0] == "video/mp4"
    assert _is_mp4(content.content)


def test_download_of_an_unknown_variant_is_refused(client: openai.OpenAI, completed: Video) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.download_content(completed.id, variant=unchecked("mp4"))
    assert caught.value.status_code == 400
    body = error_body(caught.value)
    assert body["message"] == (
        "Invalid value: 'mp4'. Supported values are: 'video', 'thumbnail', and 'spritesheet'."
    )
    assert body["param"] == "variant"


# --- remix ------------------------------------------------------------------------------------


def test_remix_of_a_completed_video(
    client: openai.OpenAI, simulator: Simulator, completed: Video
) -> None:
    remix = client.videos.remix(completed.id, prompt=unique("the same shot, at night"))
    assert remix.id != completed.id
    assert remix.remixed_from_video_id == completed.id
    assert (remix.status, remix.model, remix.size, remix.seconds) == (
        "queued",
        completed.model,
        completed.size,
        completed.seconds,
    )
    record = simulator.create_record(remix.id)
    assert (record["kind"], record["source_video_id"]) == ("remix", completed.id)

    done = client.videos.poll(remix.id)
    assert (done.status, done.remixed_from_video_id) == ("completed", completed.id)


def test_remix_of_an_unfinished_video_is_a_conflict(client: openai.OpenAI) -> None:
    source = client.videos.create(prompt=unique("a bonfire on a beach"))
    with pytest.raises(openai.ConflictError) as caught:
        client.videos.remix(source.id, prompt=unique("the bonfire, in rain"))
    assert caught.value.status_code == 409
    assert error_body(caught.value)["code"] == "video_not_ready"


# --- typed errors -----------------------------------------------------------------------------


def test_incorrect_api_key_is_an_authentication_error(simulator: Simulator) -> None:
    with (
        sdk_client(simulator, api_key="sk-not-the-simulators-key") as stranger,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        stranger.videos.retrieve("video_" + "0" * 48)
    assert caught.value.status_code == 401
    body = error_body(caught.value)
    assert body["message"].startswith("Incorrect API key provided.")
    assert body["code"] == "invalid_api_key"


def test_missing_api_key_is_an_authentication_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client.videos.list(extra_headers={"Authorization": openai.Omit()})
    assert caught.value.status_code == 401
    body = error_body(caught.value)
    assert body["message"].startswith("You didn't provide an API key.")
    assert body["code"] is None


def test_unsupported_seconds_is_refused(client: openai.OpenAI, simulator: Simulator) -> None:
    before = len(simulator.creates())
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt=unique("five seconds of rain"), seconds=unchecked("5"))
    assert caught.value.status_code == 400
    body = error_body(caught.value)
    assert body["message"] == (
        "Invalid value: '5'. Supported values are: '4', '8', '12', '16', and '20'."
    )
    assert (body["param"], body["type"]) == ("seconds", "invalid_request_error")
    assert len(simulator.creates()) == before


def test_unsupported_size_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.create(prompt=unique("a tiny screen"), size=unchecked("640x480"))
    assert caught.value.status_code == 400
    body = error_body(caught.value)
    assert body["message"].startswith("Invalid value: '640x480'. Supported values are: ")
    assert (body["param"], body["type"]) == ("size", "invalid_request_error")


def test_unknown_video_is_not_found(client: openai.OpenAI) -> None:
    missing = "video_" + "0" * 48
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.retrieve(missing)
    body = error_body(caught.value)
    assert body["code"] == "not_found"
    assert missing in body["message"]

"""The 2026-03 additions through the SDK: edits, extensions and characters.

The SDK's `videos.edit` / `videos.extend` cannot send a `{"id": ...}` video reference (they refuse
it client-side, reference §7.2), so edits and extensions of a video by id go through the SDK's
low-level `client.post`, as OpenAI's own Sora CLI does; that works in every SDK. The methods
themselves, and characters, exist only in the latest SDK.
"""

from __future__ import annotations

import uuid

import openai
import pytest
from openai.types import Video

from tests.sdk.harness import MARKS, Simulator, error_body, latest_sdk_only, unique

pytestmark = list(MARKS)


@latest_sdk_only
def test_latest_sdk_has_the_2026_methods(client: openai.OpenAI) -> None:
    for name in ("edit", "extend", "create_character", "get_character"):
        assert callable(getattr(client.videos, name, None)), name


@latest_sdk_only
def test_sdk_edit_and_extend_refuse_a_video_id_before_sending(
    client: openai.OpenAI, simulator: Simulator, completed: Video
) -> None:
    before = len(simulator.creates())
    with pytest.raises(RuntimeError, match="Expected entry at `video`"):
        client.videos.extend(prompt="more", seconds="4", video={"id": completed.id})
    with pytest.raises(RuntimeError, match="Expected entry at `video`"):
        client.videos.edit(prompt="bluer", video={"id": completed.id})
    assert len(simulator.creates()) == before


def test_extension_by_id_has_the_stitched_total(
    client: openai.OpenAI, simulator: Simulator, completed: Video
) -> None:
    extension = client.post(
        "/videos/extensions",
        body={
            "prompt": unique("the lighthouse beam sweeps on"),
            "seconds": "8",
            "video": {"id": completed.id},
        },
        cast_to=Video,
    )
    assert extension.id != completed.id
    assert extension.seconds == str(int(completed.seconds) + 8)
    assert (extension.model, extension.size) == (completed.model, completed.size)
    assert extension.remixed_from_video_id is None
    record = simulator.create_record(extension.id)
    assert (record["kind"], record["source_video_id"]) == ("extension", completed.id)
    assert record["content_type"] == "application/json"

    done = client.videos.poll(extension.id)
    assert (done.status, done.seconds) == ("completed", extension.seconds)


def test_edit_by_id(client: openai.OpenAI, simulator: Simulator, completed: Video) -> None:
    edit = client.post(
        "/videos/edits",
        body={"prompt": unique("the same shot, in autumn colours"), "video": {"id": completed.id}},
        cast_to=Video,
    )
    assert edit.id != completed.id
    assert (edit.status, edit.model, edit.size, edit.seconds) == (
        "queued",
        completed.model,
        completed.size,
        completed.seconds,
    )
    assert edit.remixed_from_video_id is None
    record = simulator.create_record(edit.id)
    assert (record["kind"], record["source_video_id"]) == ("edit", completed.id)
    assert client.videos.poll(edit.id).status == "completed"


def test_edit_of_an_unknown_video_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.post(
            "/videos/edits",
            body={"prompt": "anything", "video": {"id": "video_" + "0" * 48}},
            cast_to=Video,
        )
    assert error_body(caught.value)["code"] == "not_found"


@latest_sdk_only
def test_character_from_a_downloaded_clip(client: openai.OpenAI, completed: Video) -> None:
    clip = client.videos.download_content(completed.id, variant="video").content
    name = f"Mossy {uuid.uuid4().hex[:6]}"

    character = client.videos.create_character(name=name, video=("mossy.mp4", clip, "video/mp4"))
    assert character.id is not None
    assert character.id.startswith("char_")
    assert character.name == name
    assert isinstance(character.created_at, int)

    fetched = client.videos.get_character(character.id)
    assert (fetched.id, fetched.name, fetched.created_at) == (
        character.id,
        name,
        character.created_at,
    )
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.get_character("char_" + "0" * 48)
    assert error_body(caught.value)["code"] == "not_found"

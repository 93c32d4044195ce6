"""The official openai SDK against clipline's /v1/videos facade on the full embedded stack (one
stack for the module): create with and without an image file, create_and_poll, retrieve, list
pages, downloads of all three variants equal to the objects in S3, Range, delete, 404 and 401.
Runs under both SDK generations (the Makefile's `sdk` target)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from minio import Minio
from minio.error import S3Error
from openai.types import Video
from PIL import Image

from clipline import local_keys
from clipline.stack import BUCKET, StackOptions, StackState, admin_endpoint
from tests.e2e.harness import running_stack
from tests.sdk.harness import SORA_DEPRECATED, error_body, unique

pytestmark = [pytest.mark.filterwarnings(SORA_DEPRECATED), pytest.mark.timeout(240)]
VARIANTS = ("video", "thumbnail", "spritesheet")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(generation_seconds=0.5, queue_seconds=0.1, poll_after_ms=100)
    with running_stack(tmp_path_factory.mktemp("facade"), options) as state:
        yield state


def key_of(stack: StackState, tenant: str) -> str:
    home = Path(stack.home)
    return local_keys.ensure(home, tenant, *admin_endpoint(home))


def facade(stack: StackState, tenant: str, **options: Any) -> openai.OpenAI:
    settings: dict[str, Any] = {
        "api_key": key_of(stack, tenant),
        "base_url": f"{stack.intake_url}/v1",
        "timeout": 30.0,
    }
    return openai.OpenAI(**(settings | options))


@pytest.fixture(scope="module")
def tenant() -> str:
    return f"sdk{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(stack: StackState, tenant: str) -> Iterator[openai.OpenAI]:
    with facade(stack, tenant) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def native(stack: StackState, tenant: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {key_of(stack, tenant)}"}
    with httpx.Client(base_url=stack.intake_url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def s3(stack: StackState) -> Minio:
    """S3 read with the stack's own key: what storage really stored."""
    return Minio(stack.s3_endpoint, stack.s3_access_key, stack.s3_secret_key, secure=False)


@pytest.fixture(scope="module")
def completed(client: openai.OpenAI) -> Video:
    video = client.videos.create_and_poll(
        prompt=unique("a lighthouse in drifting fog"), size="1280x720", seconds="4",
        poll_interval_ms=100,
    )  # fmt: skip
    assert video.status == "completed", video
    return video


def stored(native: httpx.Client, video: Video) -> dict[str, str]:
    """variant -> S3 key, from the job's record (native API)."""
    record = native.get(f"/v1/jobs/job_{video.id.removeprefix('video_')}").json()
    return {a["variant"]: a["key"] for a in record["assets"]}


def test_create_and_poll_completes_and_retrieve_agrees(
    client: openai.OpenAI, completed: Video
) -> None:
    assert completed.id.startswith("video_")
    assert (completed.progress, completed.size, completed.seconds) == (100, "1280x720", "4")
    assert completed.completed_at is not None
    assert completed.completed_at >= completed.created_at
    assert completed.error is None
    again = client.videos.retrieve(completed.id)
    assert again.model_dump() == completed.model_dump()


def test_downloads_of_every_variant_are_the_stored_objects(
    client: openai.OpenAI, completed: Video, native: httpx.Client, s3: Minio
) -> None:
    keys = stored(native, completed)
    assert set(keys) == set(VARIANTS)
    for variant in VARIANTS:
        got = client.videos.download_content(completed.id, variant=variant)  # type: ignore[arg-type]
        obj = s3.get_object(BUCKET, keys[variant])
        try:
            expected = obj.read()
        finally:
            obj.close()
            obj.release_conn()
        assert got.content == expected, variant
        assert len(expected) > 0


def test_a_range_is_forwarded_and_answered_206(
    stack: StackState, completed: Video, native: httpx.Client, s3: Minio
) -> None:
    obj = s3.get_object(BUCKET, stored(native, completed)["video"])
    try:
        whole = obj.read()
    finally:
        obj.close()
        obj.release_conn()
    part = native.get(f"/v1/videos/{completed.id}/content", headers={"Range": "bytes=4-15"})
    assert part.status_code == 206
    assert part.content == whole[4:16]
    assert part.headers["content-range"] == f"bytes 4-15/{len(whole)}"
    assert part.headers["content-type"] == "video/mp4"
    beyond = native.get(
        f"/v1/videos/{completed.id}/content", headers={"Range": f"bytes={len(whole) + 10}-"}
    )
    assert beyond.status_code == 416
    assert set(beyond.json()["error"]) == {"message", "type", "param", "code"}


def test_a_create_with_an_image_file_uses_it_as_the_first_frame(
    client: openai.OpenAI, native: httpx.Client
) -> None:
    frame = io.BytesIO()
    Image.new("RGB", (1280, 720), (20, 90, 200)).save(frame, format="PNG")
    video = client.videos.create(
        prompt=unique("the blue frame comes alive"), size="1280x720", seconds="4",
        input_reference=("frame.png", frame.getvalue(), "image/png"),
    )  # fmt: skip
    assert video.status in ("queued", "in_progress")
    done = client.videos.poll(video.id, poll_interval_ms=100)
    assert done.status == "completed", done
    record = native.get(f"/v1/jobs/job_{video.id.removeprefix('video_')}").json()
    assert record["spec"]["input_reference"]["content_type"] == "image/png"


def test_list_pages_through_a_tenants_videos(stack: StackState) -> None:
    with facade(stack, f"list{uuid.uuid4().hex[:8]}") as sdk:
        made = [sdk.videos.create(prompt=unique(f"page {i}")).id for i in range(3)]
        first = sdk.videos.list(limit=2)
        assert [v.id for v in first.data] == made[::-1][:2]  # newest first by default
        assert first.has_more is True
        every = [v.id for v in sdk.videos.list(limit=2)]  # the SDK follows `after`
        assert every == made[::-1]
        ascending = [v.id for v in sdk.videos.list(limit=1, order="asc")]
        assert ascending == made


def test_delete_removes_the_assets_and_the_video(
    client: openai.OpenAI, native: httpx.Client, s3: Minio
) -> None:
    video = client.videos.create_and_poll(prompt=unique("to be deleted"), poll_interval_ms=100)
    assert video.status == "completed", video
    keys = stored(native, video)
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    for key in keys.values():
        with pytest.raises(S3Error):
            s3.stat_object(BUCKET, key)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    assert video.id not in [v.id for v in client.videos.list(limit=100)]
    assert native.get(f"/v1/jobs/job_{video.id.removeprefix('video_')}/assets").status_code == 410


def test_an_unknown_video_is_404_in_openais_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.videos.retrieve("video_" + uuid.uuid4().hex)
    assert error_body(caught.value)["code"] == "not_found"


def test_a_wrong_key_is_401(stack: StackState) -> None:
    with (
        openai.OpenAI(
            api_key="sk-not-a-clipline-key", base_url=f"{stack.intake_url}/v1", max_retries=0
        ) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.videos.list()
    assert error_body(caught.value)["code"] == "invalid_api_key"


def test_a_remix_through_the_sdk_is_a_clipline_remix(
    client: openai.OpenAI, completed: Video, native: httpx.Client
) -> None:
    remix = client.videos.remix(completed.id, prompt=unique("the lighthouse, at night"))
    assert remix.remixed_from_video_id == completed.id
    assert (remix.model, remix.size, remix.seconds) == (
        completed.model, completed.size, completed.seconds,
    )  # fmt: skip
    done = client.videos.poll(remix.id, poll_interval_ms=100)
    assert (done.status, done.remixed_from_video_id) == ("completed", completed.id)
    record = native.get(f"/v1/jobs/job_{remix.id.removeprefix('video_')}").json()
    assert (record["spec"]["kind"], record["spec"]["source_job_id"]) == (
        "remix", f"job_{completed.id.removeprefix('video_')}",
    )  # fmt: skip


def test_an_extension_through_the_sdks_post_has_the_stitched_total(
    client: openai.OpenAI, completed: Video
) -> None:
    """`videos.extend` refuses a `{"id"}` video client-side (reference §7.3, §10.1): the SDK's
    low-level `post` sends it, as OpenAI's own Sora CLI does, in every SDK generation."""
    extension = client.post(
        "/videos/extensions",
        body={
            "prompt": unique("the beam sweeps on"),
            "seconds": "4",
            "video": {"id": completed.id},
        },
        cast_to=Video,
    )
    assert extension.seconds == str(int(completed.seconds) + 4)
    assert extension.remixed_from_video_id is None
    done = client.videos.poll(extension.id, poll_interval_ms=100)
    assert (done.status, done.seconds) == ("completed", extension.seconds)


def test_another_tenants_video_is_no_source(stack: StackState, completed: Video) -> None:
    other = facade(stack, f"other{uuid.uuid4().hex[:8]}")
    with other, pytest.raises(openai.NotFoundError) as caught:
        other.videos.remix(completed.id, prompt=unique("not mine"))
    assert error_body(caught.value)["code"] == "not_found"

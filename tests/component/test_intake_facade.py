"""The OpenAI Videos facade in process (fake ports, storage's assets answer wired in): create by
intake's own take path, the Video object, list pages, delete, and OpenAI's error envelope on
every refusal. Streaming `/content` from S3 is proven on the real stack (tests/sdk)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from services.intake.facade_map import job_id_of, video_id
from shared.contracts import JobAcceptedV1, JobStatus
from shared.contracts.ids import job_id_for
from tests.component.facade_support import serving
from tests.component.harness import job_record, new_job_id
from tests.fakes import bearer

BODY = {"prompt": "a paper boat", "model": "sora-2", "seconds": "4", "size": "1280x720"}
KEYS = {"message", "type", "param", "code"}
VIDEO_KEYS = {
    "id", "object", "model", "status", "progress", "created_at", "completed_at", "expires_at",
    "prompt", "size", "seconds", "remixed_from_video_id", "error",
}  # fmt: skip


def png(width: int = 1280, height: int = 720) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def envelope(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    assert set(body["error"]) == KEYS
    error: dict[str, Any] = body["error"]
    return error


async def test_a_json_create_is_a_clipline_job_answered_as_a_queued_video() -> None:
    async with serving() as s:
        answer = await s.client.post("/v1/videos", json=BODY, headers={"Idempotency-Key": "k1"})
        assert answer.status_code == 200, answer.text
        video = answer.json()
        assert set(video) == VIDEO_KEYS
        job_id = job_id_for("acme", "k1")
        assert video["id"] == video_id(job_id)
        assert (video["status"], video["progress"], video["seconds"]) == ("queued", 0, "4")
        assert video["error"] is None
        assert answer.headers["x-request-id"].startswith("req_")
        record = await s.jobs.get("acme", job_id)
        assert record is not None
        assert (record.spec.size, record.spec.seconds) == ("1280x720", 4)
        assert [type(e) for e in s.events] == [JobAcceptedV1]
        again = await s.client.post("/v1/videos", json=BODY, headers={"Idempotency-Key": "k1"})
        assert again.json()["id"] == video["id"]  # the same job, announced once (fact id)
        reused = await s.client.post(
            "/v1/videos", json=BODY | {"prompt": "other"}, headers={"Idempotency-Key": "k1"}
        )
        assert reused.status_code == 409
        assert reused.headers["x-should-retry"] == "false"
        assert envelope(reused.json())["code"] == "idempotency_conflict"


async def test_defaults_are_openais_and_a_create_without_a_key_is_a_new_job_each_time() -> None:
    async with serving() as s:
        first = await s.client.post("/v1/videos", json={"prompt": "x"})
        second = await s.client.post("/v1/videos", json={"prompt": "x"})
        assert first.status_code == 200, first.text
        assert first.json()["id"] != second.json()["id"]
        assert (first.json()["model"], first.json()["size"], first.json()["seconds"]) == (
            "sora-2", "720x1280", "4",
        )  # fmt: skip


async def test_a_multipart_create_with_an_image_file_becomes_the_jobs_input_image() -> None:
    async with serving() as s:
        files = {"input_reference": ("frame.png", png(), "image/png")}
        answer = await s.client.post("/v1/videos", data=BODY, files=files)
        assert answer.status_code == 200, answer.text
        job_id = job_id_of(answer.json()["id"])
        assert job_id is not None
        record = await s.jobs.get("acme", job_id)
        assert record is not None
        assert record.spec.input_reference is not None
        assert record.spec.input_reference.content_type == "image/png"
        # bytes without a declared image type: what they are decides
        files = {"input_reference": ("blob", png(), "application/octet-stream")}
        answer = await s.client.post("/v1/videos", data=BODY, files=files)
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("body", "files", "param", "code"),
    [
        ({"prompt": "x", "seconds": 4}, None, "seconds", "invalid_type"),
        ({"prompt": "x", "seconds": "10"}, None, "seconds", "invalid_seconds"),
        ({"prompt": "x", "size": "1x1"}, None, "size", "invalid_size"),
        ({"prompt": "x", "model": "nope"}, None, "model", "unknown_model"),
        ({"prompt": ""}, None, "prompt", "missing_required_parameter"),
        ({"prompt": "x", "width": 5}, None, "width", "unknown_parameter"),
        ({"prompt": "x", "input_reference": {"file_id": "f"}}, None, "input_reference",
         "unsupported_value"),
        ({"prompt": "x", "input_reference": "frame"}, {}, "input_reference", "invalid_type"),
        ({"prompt": "x", "size": "1280x720"}, {"input_reference": ("f.png", png(640, 360),
         "image/png")}, "input_reference", "invalid_image"),
        ({"prompt": "x", "size": "1280x720"}, {"input_reference": ("f.png", b"not an image",
         "text/plain")}, "input_reference", "invalid_image"),
    ],
)  # fmt: skip
async def test_a_bad_create_is_a_400_in_openais_envelope(
    body: dict[str, Any], files: dict[str, Any] | None, param: str, code: str
) -> None:
    async with serving() as s:
        if files is None:
            answer = await s.client.post("/v1/videos", json=body)
        elif files:
            data = {k: str(v) for k, v in body.items()}
            answer = await s.client.post("/v1/videos", data=data, files=files)
        else:  # text fields only, as multipart (httpx sends a form without files urlencoded)
            data = {k: str(v) for k, v in body.items()}
            answer = await s.client.post(
                "/v1/videos", headers={"Content-Type": _form_type()}, content=_form(data)
            )
        assert answer.status_code == 400, answer.text
        error = envelope(answer.json())
        assert (error["param"], error["code"], error["type"]) == (
            param, code, "invalid_request_error",
        )  # fmt: skip
        assert s.events == []


BOUNDARY = "clipline-test-boundary"


def _form_type() -> str:
    return f"multipart/form-data; boundary={BOUNDARY}"


def _form(fields: dict[str, str]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


async def test_retrieve_maps_statuses_and_hides_other_tenants_and_deleted_videos() -> None:
    async with serving() as s:
        cases = {
            JobStatus.ADMITTED: ("queued", 0),
            JobStatus.GENERATING: ("in_progress", 40),
            JobStatus.STORING: ("in_progress", 99),
        }
        for status, (shown, progress) in cases.items():
            job_id = new_job_id()
            s.jobs.put(job_record(job_id, status, progress=progress, upstream_id="v"))
            answer = await s.client.get(f"/v1/videos/{video_id(job_id)}")
            assert (answer.json()["status"], answer.json()["progress"]) == (shown, progress)
            assert answer.headers["openai-poll-after-ms"] == "500"
        failed = new_job_id()
        s.jobs.put(job_record(failed, JobStatus.FAILED, reason="budget_exceeded", detail="no"))
        video = (await s.client.get(f"/v1/videos/{video_id(failed)}")).json()
        assert video["status"] == "failed"
        assert video["error"] == {"code": "budget_exceeded", "message": "no"}
        assert video["completed_at"] is not None
        done = new_job_id()
        s.completed(done)
        video = (await s.client.get(f"/v1/videos/{video_id(done)}")).json()
        assert (video["status"], video["progress"]) == ("completed", 100)
        theirs = new_job_id()
        s.completed(theirs, tenant="globex")
        for missing in (video_id(theirs), "video_" + "0" * 48, "job_x", video_id(new_job_id())):
            answer = await s.client.get(f"/v1/videos/{missing}")
            assert answer.status_code == 404
            assert envelope(answer.json())["code"] == "not_found"


async def test_list_pages_in_order_without_deleted_videos() -> None:
    async with serving() as s:
        ids = []
        for i in range(5):
            answer = await s.client.post(
                "/v1/videos", json=BODY, headers={"Idempotency-Key": f"p{i}"}
            )
            ids.append(answer.json()["id"])
        seen: list[str] = []
        after = None
        while True:
            params = {"limit": "2", "order": "asc"} | ({"after": after} if after else {})
            body = (await s.client.get("/v1/videos", params=params)).json()
            assert body["object"] == "list"
            seen += [v["id"] for v in body["data"]]
            if not body["has_more"]:
                break
            after = body["last_id"]
        assert sorted(seen) == sorted(ids)
        assert len(seen) == 5
        newest = (await s.client.get("/v1/videos", params={"limit": "1"})).json()
        assert newest["data"][0]["id"] == seen[-1]  # desc by default
        other = (await s.client.get("/v1/videos", headers=bearer("globex"))).json()
        assert other["data"] == []
        assert (other["first_id"], other["last_id"], other["has_more"]) == (None, None, False)
        for params in ({"limit": "101"}, {"limit": "-1"}, {"order": "up"}, {"after": "video_x"}):
            answer = await s.client.get("/v1/videos", params=params)
            assert answer.status_code == 400
            envelope(answer.json())
        # limit=0 is OpenAI's (minimum 0): an empty page that says more exist. The native
        # list, clipline's own contract, takes 1..100 (a 422 problem for 0): docs/api.md.
        none = await s.client.get("/v1/videos", params={"limit": "0"})
        assert (none.status_code, none.json()["data"], none.json()["has_more"]) == (200, [], True)
        native = await s.client.get("/v1/jobs", params={"limit": "0"})
        assert (native.status_code, native.json()["field"]) == (422, "limit")


async def test_delete_removes_the_assets_and_hides_the_video_but_not_the_job() -> None:
    async with serving() as s:
        job_id = new_job_id()
        s.completed(job_id)
        video = video_id(job_id)
        answer = await s.client.delete(f"/v1/videos/{video}")
        assert answer.json() == {"id": video, "object": "video.deleted", "deleted": True}
        assert not [k for k in s.store.objects if job_id in k]
        assert (await s.client.get(f"/v1/videos/{video}")).status_code == 404
        assert (await s.client.get(f"/v1/videos/{video}/content")).status_code == 404
        assert video not in [v["id"] for v in (await s.client.get("/v1/videos")).json()["data"]]
        native = await s.client.get(f"/v1/jobs/{job_id}")
        assert native.json()["deleted_at"] is not None
        assert (await s.client.delete(f"/v1/videos/{video}")).status_code == 200  # a repeat
        running = new_job_id()
        s.jobs.put(job_record(running, JobStatus.GENERATING, upstream_id="v"))
        refused = await s.client.delete(f"/v1/videos/{video_id(running)}")
        assert refused.status_code == 409
        assert envelope(refused.json())["code"] == "video_not_ready"
        theirs = new_job_id()
        s.completed(theirs, tenant="globex")
        assert (await s.client.delete(f"/v1/videos/{video_id(theirs)}")).status_code == 404
        assert [k for k in s.store.objects if theirs in k]


async def test_content_refusals_are_typed() -> None:
    async with serving() as s:
        job_id = new_job_id()
        s.completed(job_id)
        video = video_id(job_id)
        bad = await s.client.get(f"/v1/videos/{video}/content", params={"variant": "mp4"})
        assert bad.status_code == 400
        assert (
            "Supported values are: 'video', 'thumbnail', and 'spritesheet'"
            in (envelope(bad.json())["message"])
        )
        running = new_job_id()
        s.jobs.put(job_record(running, JobStatus.GENERATING, upstream_id="v"))
        answer = await s.client.get(f"/v1/videos/{video_id(running)}/content")
        assert answer.status_code == 409
        s.assets.down = True
        answer = await s.client.get(f"/v1/videos/{video}/content")
        assert answer.status_code == 503
        assert envelope(answer.json())["type"] == "server_error"


async def test_a_missing_or_wrong_key_is_401_in_openais_envelope() -> None:
    async with serving() as s:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer sk-nope"}):
            for method, path in (("POST", "/v1/videos"), ("GET", "/v1/videos"),
                                 ("GET", "/v1/videos/video_x"), ("DELETE", "/v1/videos/video_x"),
                                 ("GET", "/v1/videos/video_x/content")):  # fmt: skip
                answer = await s.client.request(method, path, headers=headers, json=BODY)
                assert answer.status_code == 401, (method, path)
                assert envelope(answer.json())["code"] == "invalid_api_key"
        assert s.events == []


def test_ids_map_both_ways() -> None:
    job_id = new_job_id()
    assert job_id_of(video_id(job_id)) == job_id
    assert video_id(job_id) == "video_" + job_id[4:]
    for other in ("video_" + "a" * 48, "video_" + "A" * 32, "job_" + "a" * 32, ""):
        assert job_id_of(other) is None


async def test_the_frameworks_own_errors_under_v1_videos_are_in_openais_envelope() -> None:
    """An unknown path, a wrong method and a route not served (yet) under /v1/videos answer
    OpenAI's envelope, not the native API's problem details."""
    async with serving() as s:
        unknown = await s.client.get("/v1/videos/video_x/nothing")
        wrong = await s.client.put("/v1/videos", json=BODY)
        native = await s.client.get("/v1/nothing")
    assert unknown.status_code == 404
    assert envelope(unknown.json())["code"] == "not_found"
    assert wrong.status_code == 405
    assert envelope(wrong.json())["code"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]
    assert native.status_code == 404
    assert native.headers["content-type"].startswith("application/problem+json")

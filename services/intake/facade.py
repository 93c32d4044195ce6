"""The OpenAI-compatible Videos facade on intake: `/v1/videos` create (JSON or multipart with an
`input_reference` file), remix, edits and extensions (of the caller's own completed videos),
retrieve, list, delete and `/content`, for the official openai SDK with
`base_url` pointed at clipline. Every create is a clipline job taken by intake's own use case
(budgets, idempotency by `Idempotency-Key`, exactly-once creation, storage, tracing); assets are
presigned or deleted by storage over NATS, and `/content` streams the object through from S3.

These endpoints answer OpenAI's error envelope themselves (facade_map.error_body), whatever the
rest of the app answers; the mapping itself is pure (facade_map.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import yarl
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from services.intake import problems
from services.intake.domain import IMAGE_FORMATS, IMAGE_TYPES, MAX_IMAGE_BYTES, Invalid, decode
from services.intake.facade_map import (
    DEFAULTS,
    LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
    Problem,
    create_request,
    derived_request,
    error_body,
    job_id_of,
    json_image,
    list_body,
    list_query,
    page,
    refusal,
    variant_problem,
    video_id,
    video_object,
)
from services.intake.openapi import openai_errors
from services.intake.ports import Deps
from services.intake.spans import server_span
from services.intake.usecases import Refused, find, take
from shared.apikeys import Denied, authenticate
from shared.contracts import JobRecordV1
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1
from shared.contracts.requests import CALLBACK_URL_MAX_CHARS
from shared.streams import MAX_PAYLOAD_BYTES

log = logging.getLogger("clipline.intake.facade")
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - 64 * 1024  # as the native API: a job fits in a request
POLL_AFTER_MS = "500"
CHUNK = 64 * 1024
PASSED_HEADERS = (
    "Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified",
)  # fmt: skip
NO_RETRY = {"x-should-retry": "false"}  # the SDK retries a 409: a conflict stays one
router = APIRouter()


PREFIX = "/v1/videos"
_TEXT = {"type": "string"}
_CREATE_FIELDS: dict[str, Any] = {
    "prompt": {"type": "string", "minLength": 1, "description": "what to generate"},
    "model": {"type": "string", "default": DEFAULTS["model"]},
    "size": {"type": "string", "default": DEFAULTS["size"], "description": "WIDTHxHEIGHT"},
    "seconds": {"type": "string", "default": DEFAULTS["seconds"], "description": 'e.g. "4"'},
}
_CALLBACK = {
    "callback_url": {
        "type": "string", "maxLength": CALLBACK_URL_MAX_CHARS,
        "description": "clipline's extra (the SDK's extra_body): the job's webhook receiver, "
        "an absolute public http(s) URL (docs/webhooks.md)",
    }
}  # fmt: skip
_CREATE_FIELDS.update(_CALLBACK)
CREATE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["prompt"], "additionalProperties": False,
                "properties": {**_CREATE_FIELDS, "input_reference": {
                    "type": "object", "properties": {"image_url": {**_TEXT,
                        "description": "a data URL of a JPEG, PNG or WebP image of `size`"}},
                }},
            }},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["prompt"],
                "properties": {**_CREATE_FIELDS, "input_reference": {
                    "type": "string", "format": "binary",
                    "description": "the first frame: a JPEG, PNG or WebP image of `size`",
                }},
            }},
        },
    }
}  # fmt: skip
"""The create's body as the OpenAPI document shows it (the handler reads and checks it itself,
to answer OpenAI's envelope)."""
_PROMPT = {"type": "string", "minLength": 1}
_VIDEO_REF = {
    "type": "object", "required": ["id"], "additionalProperties": False,
    "properties": {"id": {**_TEXT, "description": "one of the caller's completed videos"}},
}  # fmt: skip
_ADDED = {"type": "string", "enum": ["4", "8", "12", "16", "20"], "description": "seconds added"}


def _derived_doc(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A remix's, edit's or extension's body as the OpenAPI document shows it (JSON; multipart
    the same fields, `video[id]` for `video`)."""
    form = {("video[id]" if k == "video" else k): (_TEXT if k == "video" else v)
            for k, v in fields.items()}  # fmt: skip
    form_required = ["video[id]" if k == "video" else k for k in required]
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object", "required": required,
                                                "additionalProperties": False,
                                                "properties": fields}},
                "multipart/form-data": {"schema": {"type": "object", "required": form_required,
                                                   "properties": form}},
            },
        }
    }  # fmt: skip


REMIX_DOC = _derived_doc({"prompt": _PROMPT, **_CALLBACK}, ["prompt"])
EDIT_DOC = _derived_doc({"prompt": _PROMPT, "video": _VIDEO_REF, **_CALLBACK}, ["prompt", "video"])
EXTEND_DOC = _derived_doc(
    {"prompt": _PROMPT, "seconds": _ADDED, "video": _VIDEO_REF, **_CALLBACK},
    ["prompt", "seconds", "video"],
)
LIST_DOC: dict[str, Any] = {
    "parameters": [
        {"name": "after", "in": "query", "required": False, "schema": _TEXT,
         "description": "a video id: the page starts after it"},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": LIST_MAX_LIMIT,
                    "default": LIST_DEFAULT_LIMIT}},
        {"name": "order", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"}},
    ]
}  # fmt: skip


def openai_envelope(problem: problems.Problem) -> Response:
    """A problem raised under /v1/videos by the framework or a shared dependency (an unknown
    path, a 405, a 422) in OpenAI's envelope, as the facade's own refusals are."""
    body = error_body(problem.detail, status=problem.status, param=problem.field,
                      code=problem.reason)  # fmt: skip
    return _json(body, problem.status, dict(problem.headers))


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = {"x-request-id": f"req_{uuid.uuid4().hex}"}
    return JSONResponse(body, status, headers=request_id | (headers or {}))


def _problem(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return _json(problem.body(), problem.status, headers)


def _not_found(video: str) -> JSONResponse:
    return _problem(Problem(404, f"No video found with id '{video}'.", "video_id", "not_found"))


def _unavailable(what: str) -> JSONResponse:
    body = error_body(f"{what}; retry shortly", status=503, code="unavailable")
    return _json(body, 503, {"retry-after": "1"})


async def _caller(request: Request) -> tuple[Deps, str] | JSONResponse:
    """The app's deps and the tenant of the request's API key, or the 401/503 to answer."""
    deps: Deps = request.app.state.deps
    try:
        found = await authenticate(
            deps.keys, request.headers.get("authorization"), datetime.now(UTC)
        )
    except Exception:  # NATS or KV unreachable: not the caller's fault
        log.warning("facade: could not read the API keys", exc_info=True)
        return _unavailable("API keys cannot be checked now")
    if isinstance(found, Denied):
        body = error_body(found.detail, status=401, code="invalid_api_key")
        return _json(body, 401, {"WWW-Authenticate": 'Bearer realm="clipline"'})
    return deps, found.tenant


async def _video_of(deps: Deps, tenant: str, video: str) -> JobRecordV1 | None:
    """The tenant's job behind a video id; None when unknown, another's, or deleted."""
    job_id = job_id_of(video)
    record = None if job_id is None else await find(deps, tenant, job_id)
    return None if record is None or record.deleted_at is not None else record


@router.post("/v1/videos", responses=openai_errors(400, 409, 413, 503), openapi_extra=CREATE_DOC)
async def create_video(request: Request) -> Response:
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    deps, tenant = caller
    body = await _create_body(request, deps)
    if isinstance(body, Problem):
        return _problem(body)
    return await _take(request, deps, tenant, body)


@router.post(
    "/v1/videos/edits",
    responses=openai_errors(400, 404, 409, 413, 503),
    openapi_extra=EDIT_DOC,
)
async def edit_video(request: Request) -> Response:
    """An edit of one of the caller's completed videos: `{"prompt", "video": {"id"}}`."""
    return await _derived(request, "edit")


@router.post(
    "/v1/videos/extensions",
    responses=openai_errors(400, 404, 409, 413, 503),
    openapi_extra=EXTEND_DOC,
)
async def extend_video(request: Request) -> Response:
    """An extension of one of the caller's completed videos: `{"prompt", "seconds" (the added
    segment), "video": {"id"}}`; the answer's `seconds` is the stitched total."""
    return await _derived(request, "extend")


@router.post(
    "/v1/videos/{video}/remix",
    responses=openai_errors(400, 404, 409, 413, 503),
    openapi_extra=REMIX_DOC,
)
async def remix_video(video: str, request: Request) -> Response:
    """A remix of one of the caller's completed videos: `{"prompt"}`."""
    return await _derived(request, "remix", video)


async def _derived(request: Request, kind: str, path_video: str | None = None) -> Response:
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    deps, tenant = caller
    fields = await _derived_fields(request)
    if isinstance(fields, Problem):
        return _problem(fields)
    body = derived_request(kind, fields, path_video)
    if isinstance(body, Problem):
        return _problem(body)
    source = str(body["source_job_id"])
    try:
        found = await _video_of(deps, tenant, video_id(source))
    except Exception:
        log.warning("facade: could not read the source %s", source, exc_info=True)
        return _unavailable("the source video cannot be read now")
    if found is None:  # unknown, another tenant's, or deleted: all the same to the caller
        return _not_found(path_video or video_id(source))
    return await _take(request, deps, tenant, body)


async def _derived_fields(request: Request) -> dict[str, Any] | Problem:
    """A remix's, edit's or extension's fields from JSON or multipart (`video[id]` read as
    `video: {"id"}`; an uploaded video file is refused by derived_request)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return Problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes", None, "too_large")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        if declared is None:
            return Problem(411, "a multipart body needs a Content-Length", None, "length_required")
        try:
            form = await request.form(max_files=1, max_fields=16)
        except MultiPartException as exc:
            return Problem(
                400, f"the multipart body cannot be read: {exc.message}", None, "invalid_body"
            )
        try:
            fields: dict[str, Any] = {}
            for name, value in form.multi_items():
                if isinstance(value, UploadFile) and name == "video":
                    fields[name] = "uploaded file"  # never a `{"id"}`: refused as such
                elif isinstance(value, UploadFile):
                    return Problem(
                        400, f"Unknown file parameter: '{name}'.", name, "unknown_parameter"
                    )
                elif name == "video[id]":
                    fields["video"] = {"id": value}
                else:
                    fields[name] = value
            return fields
        finally:
            await form.close()
    raw = await _read_limited(request)
    if raw is None:
        return Problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes", None, "too_large")
    decoded = decode(raw)
    if isinstance(decoded, Invalid) or not isinstance(decoded, dict):
        detail = (
            decoded.detail if isinstance(decoded, Invalid) else "the body must be a JSON object"
        )
        return Problem(400, detail, None, "invalid_json")
    return decoded


async def _take(request: Request, deps: Deps, tenant: str, body: dict[str, Any]) -> Response:
    """The job of a create, remix, edit or extension, taken by intake's own use case."""
    key = request.headers.get("idempotency-key") or f"openai:{uuid.uuid4().hex}"
    body["idempotency_key"] = key
    try:
        with server_span(request, "POST"):
            outcome = await take(deps, body, tenant, f"http:{uuid.uuid4().hex}", announce=False)
    except Exception:  # NATS or KV unreachable: the job may or may not be recorded
        log.exception("facade: could not take a create")
        answer = _unavailable("the video could not be queued (retry with the same Idempotency-Key)")
        answer.headers["Idempotency-Key"] = key
        return answer
    if isinstance(outcome, Refused):
        why = outcome.why
        source = body.get("source_job_id")
        problem = refusal(
            why.reason, why.detail, why.field, source if isinstance(source, str) else None
        )
        return _problem(problem, NO_RETRY if problem.status == 409 else None)
    return _json(video_object(outcome.record))


async def _create_body(request: Request, deps: Deps) -> dict[str, Any] | Problem:
    """clipline's request body from a JSON or multipart create."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return Problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes", None, "too_large")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        if declared is None:  # parts are spooled to disk: only a body of declared size
            return Problem(
                411, "a multipart create needs a Content-Length", None, "length_required"
            )
        return await _multipart_body(request, deps)
    raw = await _read_limited(request)
    if raw is None:
        return Problem(413, f"request body exceeds {MAX_BODY_BYTES} bytes", None, "too_large")
    fields = decode(raw)
    if isinstance(fields, Invalid) or not isinstance(fields, dict):
        detail = fields.detail if isinstance(fields, Invalid) else "the body must be a JSON object"
        return Problem(400, detail, None, "invalid_json")
    image = json_image(fields.pop("input_reference", None))
    if isinstance(image, Problem):
        return image
    return create_request(fields, image)


async def _read_limited(request: Request) -> bytes | None:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


async def _multipart_body(request: Request, deps: Deps) -> dict[str, Any] | Problem:
    try:
        form = await request.form(max_files=1, max_fields=16)
    except MultiPartException as exc:
        return Problem(
            400, f"the multipart body cannot be read: {exc.message}", None, "invalid_body"
        )
    try:
        fields: dict[str, Any] = {}
        image: str | Problem | None = None
        for name, value in form.multi_items():
            if name == "input_reference" and isinstance(value, UploadFile):
                image = await _image_data_url(value, deps)
            elif name == "input_reference":
                return Problem(
                    400,
                    "Invalid type for 'input_reference': expected a file, but got a string "
                    "instead.",
                    "input_reference",
                    "invalid_type",
                )
            elif name == "input_reference[image_url]" and isinstance(value, str):
                image = json_image({"image_url": value})
            elif isinstance(value, UploadFile):
                return Problem(400, f"Unknown file parameter: '{name}'.", name, "unknown_parameter")
            else:
                fields[name] = value
        if isinstance(image, Problem):
            return image
        return create_request(fields, image)
    finally:
        await form.close()


async def _image_data_url(upload: UploadFile, deps: Deps) -> str | Problem:
    """The uploaded image as the data URL intake's validation takes: its declared type when it
    is an image type clipline takes, else what its bytes are (the SDK sends
    application/octet-stream for bytes without a file name)."""
    data = await upload.read(MAX_IMAGE_BYTES + 1)
    if not data or len(data) > MAX_IMAGE_BYTES:
        return Problem(
            400, f"input_reference must be 1..{MAX_IMAGE_BYTES} bytes", "input_reference",
            "invalid_image",
        )  # fmt: skip
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared not in IMAGE_TYPES:
        facts = await asyncio.to_thread(deps.probe, data)
        declared = IMAGE_FORMATS.get(facts.format, "") if facts is not None else ""
        if not declared:
            allowed = ", ".join(sorted(IMAGE_TYPES))
            return Problem(
                400, f"input_reference is not an image of a type clipline takes ({allowed})",
                "input_reference", "invalid_image",
            )  # fmt: skip
    return f"data:{declared};base64,{base64.b64encode(data).decode()}"


@router.get("/v1/videos", responses=openai_errors(400, 503), openapi_extra=LIST_DOC)
async def list_videos(request: Request) -> Response:
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    deps, tenant = caller
    query = list_query(request.query_params)
    if isinstance(query, Problem):
        return _problem(query)
    try:
        records = await deps.jobs.list(tenant)  # the facade orders and pages them itself
    except Exception:  # NATS or KV unreachable
        log.warning("facade: could not list the videos of %s", tenant, exc_info=True)
        return _unavailable("videos cannot be read now")
    found = page(records, query)
    return _problem(found) if isinstance(found, Problem) else _json(list_body(found))


@router.get("/v1/videos/{video}", responses=openai_errors(404, 503))
async def retrieve_video(video: str, request: Request) -> Response:
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    deps, tenant = caller
    try:
        record = await _video_of(deps, tenant, video)
    except Exception:
        log.warning("facade: could not read %s", video, exc_info=True)
        return _unavailable("the video cannot be read now")
    if record is None:
        return _not_found(video)
    answer = video_object(record)
    running = answer["status"] in ("queued", "in_progress")
    return _json(answer, headers={"openai-poll-after-ms": POLL_AFTER_MS} if running else None)


@router.delete("/v1/videos/{video}", responses=openai_errors(404, 409, 503))
async def delete_video(video: str, request: Request) -> Response:
    """Removes the video's assets from clipline's S3 (storage does) and hides it from the
    facade; the native API still shows the job, with `deleted_at`."""
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    deps, tenant = caller
    job_id = job_id_of(video)
    if job_id is None:
        return _not_found(video)
    reply = await deps.assets.ask(tenant, AssetsRequestV1(job_id=job_id, action="delete"))
    if reply.error is not None:
        return _assets_problem(video, reply)
    return _json({"id": video_id(job_id), "object": "video.deleted", "deleted": True})


def _assets_problem(video: str, reply: AssetsReplyV1) -> JSONResponse:
    match reply.error:
        case "not_found" | "deleted":
            return _not_found(video)
        case "not_finished":
            message = f"Video '{video}' has not finished yet: wait for completed or failed."
            return _problem(Problem(409, message, "video_id", "video_not_ready"), NO_RETRY)
        case "no_assets" | "no_such_variant":
            message = f"Video '{video}' has no stored content ({reply.detail})."
            return _problem(Problem(409, message, "video_id", "no_content"), NO_RETRY)
        case _:
            return _unavailable("storage cannot answer now")


@router.get("/v1/videos/{video}/content", responses=openai_errors(400, 404, 409, 416, 503))
async def video_content(video: str, request: Request) -> Response:
    """The variant's bytes, streamed from clipline's S3 as they arrive (never held whole);
    a `Range` is forwarded and its 206 / Content-Range answered as S3 gives them."""
    caller = await _caller(request)
    if isinstance(caller, Response):
        return caller
    deps, tenant = caller
    variant = request.query_params.get("variant", "video")
    problem = variant_problem(variant)
    if problem is not None:
        return _problem(problem)
    job_id = job_id_of(video)
    if job_id is None:
        return _not_found(video)
    ask = AssetsRequestV1(job_id=job_id, action="presign", variant=variant, audience="internal")
    reply = await deps.assets.ask(tenant, ask)
    if reply.error is not None or not reply.urls:
        return _assets_problem(video, reply)
    return await _stream(reply.urls[0].url, request.headers.get("range"))


async def _stream(url: str, byte_range: str | None) -> Response:
    timeout = aiohttp.ClientTimeout(sock_connect=5, sock_read=60)
    session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
    try:
        upstream = await session.get(
            yarl.URL(url, encoded=True),  # as signed: re-encoding would break the signature
            headers={"Range": byte_range} if byte_range else None,
        )
    except (aiohttp.ClientError, TimeoutError, OSError):
        await session.close()
        log.warning("facade: S3 unreachable for a download")
        return _unavailable("the video's storage cannot be reached now")
    if upstream.status not in (200, 206):
        status, ranged = upstream.status, upstream.headers.get("Content-Range")
        upstream.release()
        await session.close()
        if status == 416:
            refused = error_body(f"Range {byte_range!r} is not satisfiable", status=416,
                              param="Range", code="range_not_satisfiable")  # fmt: skip
            return _json(refused, 416, {"Content-Range": ranged} if ranged else None)
        log.warning("facade: S3 answered HTTP %s to a download", status)
        return _json(error_body("the video's storage refused the download", status=502), 502)
    headers = {name: upstream.headers[name] for name in PASSED_HEADERS if name in upstream.headers}
    headers["x-request-id"] = f"req_{uuid.uuid4().hex}"

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                yield chunk
        finally:
            upstream.release()
            await session.close()

    return StreamingResponse(chunks(), status_code=upstream.status, headers=headers)

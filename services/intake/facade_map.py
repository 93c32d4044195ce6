"""The OpenAI Videos facade's mapping, pure: ids both ways, a job record as a Video object, a
create body as clipline's request, list pages, and OpenAI's error envelope. No I/O, no clock.

References: /work/shared/reference/openai-videos-api.md (§2 the Video object, §3 create, §4
list, §5 content, §9 errors)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.contracts import JobRecordV1, JobStatus

VIDEO_ID_RE = re.compile(r"^video_([0-9a-f]{32})$")
VARIANTS = ("video", "thumbnail", "spritesheet")
CALLBACK_FIELD = "callback_url"
"""clipline's own extra (the SDK's `extra_body={"callback_url": ...}`): the job's webhook
receiver, checked by intake as on `POST /v1/jobs` (docs/webhooks.md)."""
CREATE_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference", CALLBACK_FIELD})
DEFAULTS = {"model": "sora-2", "seconds": "4", "size": "720x1280"}  # reference §6
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LIST_DEFAULT_LIMIT = 20
LIST_MAX_LIMIT = 100
QUEUED = frozenset({JobStatus.ACCEPTED, JobStatus.ADMITTED, JobStatus.SUBMITTING})
FAILED = frozenset({JobStatus.REJECTED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    416: "invalid_request_error",
    503: "server_error",
    502: "server_error",
}


def video_id(job_id: str) -> str:
    """`job_<32 hex>` -> `video_<32 hex>`."""
    return "video_" + job_id.removeprefix("job_")


def job_id_of(video: str) -> str | None:
    """`video_<32 hex>` -> `job_<32 hex>`; None for anything else (never one of ours)."""
    match = VIDEO_ID_RE.fullmatch(video)
    return f"job_{match[1]}" if match else None


def error_body(
    message: str, *, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope (reference §9.1): all four keys, always."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def openai_status(record: JobRecordV1) -> str:
    """queued / in_progress / completed / failed: never anything else (reference §2.1)."""
    if record.status == JobStatus.COMPLETED:
        return "completed"
    if record.status in FAILED:
        return "failed"
    if record.status in QUEUED or (record.status == JobStatus.SUBMITTED and not record.progress):
        return "queued"
    return "in_progress"


def _ended_at(record: JobRecordV1) -> datetime | None:
    return record.history.get(record.status.value) if record.terminal else None


def video_object(record: JobRecordV1) -> dict[str, Any]:
    """The Video object of a job: every key of the schema, null where absent (reference §2.1).
    `expires_at` is null: clipline keeps assets by its own retention, not an hour upstream."""
    status = openai_status(record)
    progress = 100 if status == "completed" else min(max(record.progress, 0), 99)
    error = None
    if status == "failed":
        error = {
            "code": record.reason or record.status.value,
            "message": record.detail or f"the job ended {record.status.value}",
        }
    spec = record.spec
    return {
        "id": video_id(record.job_id),
        "object": "video",
        "model": spec.model,
        "status": status,
        "progress": 0 if status == "queued" else progress,
        "created_at": _unix(record.history.get(JobStatus.ACCEPTED.value)) or 0,
        "completed_at": _unix(_ended_at(record)),
        "expires_at": None,
        "prompt": spec.prompt,
        "size": spec.size,
        "seconds": str(spec.video_seconds),  # an extension's: the stitched total (§7.3)
        "remixed_from_video_id": (
            video_id(spec.source_job_id) if spec.kind == "remix" and spec.source_job_id else None
        ),
        "error": error,
    }


@dataclass(frozen=True, slots=True)
class Problem:
    """A request the facade refuses itself, with its HTTP status and envelope fields."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None

    def body(self) -> dict[str, Any]:
        return error_body(self.message, status=self.status, param=self.param, code=self.code)


def create_request(
    fields: Mapping[str, Any], image_data_url: str | None
) -> dict[str, Any] | Problem:
    """A create's fields (JSON, or multipart text fields) as clipline's request body; the input
    image, already a data URL, when one was sent. Values the registry decides (model, size,
    seconds) are checked by intake's own validation after this."""
    unknown = sorted(set(fields) - CREATE_FIELDS)
    if unknown:
        return Problem(400, f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return Problem(
            400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    for name in ("model", "size", "seconds"):
        value = fields.get(name, DEFAULTS[name])
        if not isinstance(value, str):
            kind = "an integer" if isinstance(value, int) else f"a {type(value).__name__}"
            return Problem(
                400, f"Invalid type for '{name}': expected a string, but got {kind} instead.",
                name, "invalid_type",
            )  # fmt: skip
    seconds = str(fields.get("seconds", DEFAULTS["seconds"]))
    if not seconds.isdigit() or len(seconds) > 4:
        return Problem(
            400, f"Invalid value: '{seconds}' for 'seconds'.", "seconds", "invalid_value"
        )
    body: dict[str, Any] = {
        "prompt": prompt,
        "model": fields.get("model", DEFAULTS["model"]),
        "size": fields.get("size", DEFAULTS["size"]),
        "seconds": int(seconds),
    }
    if image_data_url is not None:
        body["input_reference"] = image_data_url
    return _with_callback(body, fields)


def _with_callback(body: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with the request's callback_url (any type: intake's validation judges it)."""
    if fields.get(CALLBACK_FIELD) is not None:
        body[CALLBACK_FIELD] = fields[CALLBACK_FIELD]
    return body


DERIVED_FIELDS = {
    "remix": frozenset({"prompt", CALLBACK_FIELD}),
    "edit": frozenset({"prompt", "video", CALLBACK_FIELD}),
    "extend": frozenset({"prompt", "seconds", "video", CALLBACK_FIELD}),
}


def _no_video(video: str) -> Problem:
    return Problem(404, f"No video found with id '{video}'.", "video_id", "not_found")


def source_video(value: Any) -> str | Problem:
    """The `video` of an edit or extension: `{"id": "video_..."}` (JSON; multipart's `video[id]`
    arrives as the same). An uploaded video file is not supported by clipline."""
    if value is None:
        return Problem(
            400, "Missing required parameter: 'video'.", "video", "missing_required_parameter"
        )
    found = value.get("id") if isinstance(value, Mapping) else None
    if isinstance(found, str) and found:
        return found
    return Problem(
        400,
        'video must be {"id": "video_..."} (multipart: video[id]); uploaded videos are not '
        "supported by clipline",
        "video",
        "unsupported_value",
    )


def derived_request(
    kind: str, fields: Mapping[str, Any], source: str | None = None
) -> dict[str, Any] | Problem:
    """A remix (`source` from the path), edit or extension (`video` in the body) as clipline's
    request body (reference §7): the source video must be one of the caller's (`video_...`:
    anything else is not found); intake checks it is, and that it is completed."""
    unknown = sorted(set(fields) - DERIVED_FIELDS[kind])
    if unknown:
        return Problem(400, f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return Problem(
            400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    video = source_video(fields.get("video")) if source is None else source
    if isinstance(video, Problem):
        return video
    job_id = job_id_of(video)
    if job_id is None:
        return _no_video(video)
    body: dict[str, Any] = {"kind": kind, "source_job_id": job_id, "prompt": prompt}
    if kind == "extend":
        seconds = fields.get("seconds")
        if seconds is None:
            return Problem(
                400, "Missing required parameter: 'seconds'.", "seconds",
                "missing_required_parameter",
            )  # fmt: skip
        if not isinstance(seconds, str):
            kind_of = "an integer" if isinstance(seconds, int) else f"a {type(seconds).__name__}"
            return Problem(
                400, f"Invalid type for 'seconds': expected a string, but got {kind_of} instead.",
                "seconds", "invalid_type",
            )  # fmt: skip
        if not seconds.isdigit() or len(seconds) > 4:
            return Problem(
                400, f"Invalid value: '{seconds}' for 'seconds'.", "seconds", "invalid_value"
            )
        body["seconds"] = int(seconds)
    return _with_callback(body, fields)


def json_image(value: Any) -> str | Problem | None:
    """A JSON `input_reference`: `{"image_url": "data:..."}` (a data URL clipline can take);
    `file_id`s and remote URLs are not supported."""
    if value is None:
        return None
    url = value.get("image_url") if isinstance(value, Mapping) else None
    if isinstance(url, str) and url.startswith("data:"):
        return url
    return Problem(
        400,
        'input_reference must be an uploaded file (multipart) or {"image_url": "data:..."}; '
        "file_id and remote URLs are not supported by clipline",
        "input_reference",
        "unsupported_value",
    )


def refusal(
    reason: str, detail: str, field: str | None, source_job_id: str | None = None
) -> Problem:
    """Intake's refusal of a create (its reason and field) in OpenAI's terms; a refused source
    (of a remix, edit or extension) is named by its video id, never as a clipline job."""
    source = video_id(source_job_id) if source_job_id else "the source video"
    if reason == "idempotency_conflict":
        return Problem(409, detail, "Idempotency-Key", reason)
    if reason == "invalid_tenant":
        return Problem(400, detail, None, reason)
    if reason == "source_not_found":  # another tenant's video, or none: never told apart
        return Problem(404, f"No video found with id '{source}'.", "video", "not_found")
    if reason == "source_not_completed":
        message = (
            f"Video '{source}' is not completed: only a completed video can be remixed, "
            "edited or extended."
        )
        return Problem(409, message, "video", "video_not_ready")
    if reason == "extension_limit":
        return Problem(400, detail, field, "invalid_value")
    return Problem(400, detail, field, reason)


@dataclass(frozen=True, slots=True)
class Page:
    data: list[JobRecordV1]
    has_more: bool


@dataclass(frozen=True, slots=True)
class ListQuery:
    after: str | None
    limit: int
    descending: bool


def list_query(params: Mapping[str, str]) -> ListQuery | Problem:
    """`after`, `limit` (0..100, default 20) and `order` (asc|desc, default desc)."""
    raw_limit = params.get("limit")
    limit = LIST_DEFAULT_LIMIT
    if raw_limit is not None:
        if not raw_limit.isdigit() or int(raw_limit) > LIST_MAX_LIMIT:
            return Problem(
                400, f"Invalid value for 'limit': {raw_limit!r} (an integer 0..{LIST_MAX_LIMIT})",
                "limit", "invalid_value",
            )  # fmt: skip
        limit = int(raw_limit)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        return Problem(400, f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                       "order", "invalid_value")  # fmt: skip
    return ListQuery(params.get("after") or None, limit, order == "desc")


def _created(record: JobRecordV1) -> tuple[datetime, str]:
    return record.history.get(JobStatus.ACCEPTED.value) or EPOCH, record.job_id


def page(records: Sequence[JobRecordV1], query: ListQuery) -> Page | Problem:
    """One page of the tenant's videos (deleted ones excluded) in creation order, after the
    video `after` (which must be one of them)."""
    shown = [r for r in records if r.deleted_at is None]
    ordered = sorted(shown, key=_created, reverse=query.descending)
    start = 0
    if query.after is not None:
        ids = [video_id(r.job_id) for r in ordered]
        if query.after not in ids:
            return Problem(400, f"No video {query.after!r} to list after", "after", "invalid_value")
        start = ids.index(query.after) + 1
    chosen = ordered[start : start + query.limit]
    return Page(chosen, has_more=start + len(chosen) < len(ordered))


def list_body(found: Page) -> dict[str, Any]:
    data = [video_object(r) for r in found.data]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": found.has_more,
    }


def variant_problem(variant: str) -> Problem | None:
    if variant in VARIANTS:
        return None
    return Problem(
        400,
        f"Invalid value: '{variant}'. Supported values are: 'video', 'thumbnail', and "
        "'spritesheet'.",
        "variant",
        "invalid_value",
    )

"""Simulator decisions: request validation, job timeline, paging, ids, auth. No I/O, no clock."""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["queued", "in_progress", "completed", "failed"]
Variant = Literal["video", "thumbnail", "spritesheet"]
BodyKind = Literal["json", "form"]

VARIANTS: tuple[Variant, ...] = ("video", "thumbnail", "spritesheet")
SECONDS: tuple[str, ...] = ("4", "8", "12", "16", "20")
LAUNCH_SECONDS: tuple[str, ...] = ("4", "8", "12")
SORA_2_SIZES: tuple[str, ...] = ("720x1280", "1280x720")
LAUNCH_PRO_SIZES: tuple[str, ...] = (*SORA_2_SIZES, "1024x1792", "1792x1024")
SORA_2_PRO_SIZES: tuple[str, ...] = (*LAUNCH_PRO_SIZES, "1080x1920", "1920x1080")
# Requested slug -> base model whose limits apply (reference §2.2, §6).
MODELS: dict[str, str] = {
    "sora-2": "sora-2",
    "sora-2-pro": "sora-2-pro",
    "sora-2-2025-10-06": "sora-2",
    "sora-2-pro-2025-10-06": "sora-2-pro",
    "sora-2-2025-12-08": "sora-2",
}
SIZES: dict[str, tuple[str, ...]] = {"sora-2": SORA_2_SIZES, "sora-2-pro": SORA_2_PRO_SIZES}


@dataclass(frozen=True, slots=True)
class Contract:
    """One generation of the API: what `seconds`/`size` allow and which endpoints exist."""

    name: str
    models: tuple[str, ...]
    seconds: tuple[str, ...]
    sizes: Mapping[str, tuple[str, ...]]  # per base model; the pro list is the whole enum
    edits: bool  # edits, extensions, characters and the `characters` create parameter


# Reference §6: the launch contract, and the March 2026 expansion (16/20 s, 1080p on pro).
CONTRACTS: dict[str, Contract] = {
    "2025-10": Contract(
        "2025-10",
        ("sora-2", "sora-2-pro"),  # the dated slugs came in December 2025
        LAUNCH_SECONDS,
        {"sora-2": SORA_2_SIZES, "sora-2-pro": LAUNCH_PRO_SIZES},
        False,
    ),
    "2026-03": Contract("2026-03", tuple(MODELS), SECONDS, SIZES, True),
}
LATEST = CONTRACTS["2026-03"]
DEFAULT_MODEL, DEFAULT_SECONDS, DEFAULT_SIZE = "sora-2", "4", "720x1280"
PROMPT_MAX_CHARS = 32000
IMAGE_URL_MAX_CHARS = 20971520
KNOWN_PARAMS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
NESTED_PARAMS = frozenset({"input_reference", "video", "characters"})
MAX_CHARACTERS = 2
CHARACTER_NAME_MAX_CHARS = 80
MAX_EXTENSIONS, MAX_TOTAL_SECONDS = 6, 120
LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT = 20, 100
ORDERS = ("asc", "desc")
MODERATION_CODE = "moderation_blocked"
MODERATION_MESSAGE = "Your request was blocked by our moderation system."
INTERNAL_CODE = "internal_error"
INTERNAL_MESSAGE = "Video generation failed due to an internal error. Please try again."
REFERENCE_KEYS = ("image_url", "file_id")
REFERENCE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
EXPIRES_AFTER_SECONDS = 3600
VIDEO_ID_BYTES = 24
INVALID_REQUEST = "invalid_request_error"


@dataclass(frozen=True, slots=True)
class Invalid:
    """A request refused with an OpenAI error envelope."""

    message: str
    param: str | None = None
    code: str | None = None
    type: str = INVALID_REQUEST


@dataclass(frozen=True, slots=True)
class Upload:
    """A file part (or an inline data URL), as sniffed by the shell: image format (Pillow name),
    size, and the bytes themselves (an accepted image becomes the video's first frame)."""

    format: str | None
    width: int = 0
    height: int = 0
    data: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Reference:
    """An accepted input_reference: an uploaded image, or a JSON image_url / file_id."""

    kind: Literal["file", "image_url", "file_id"]
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A valid create: `model` as requested, limits taken from `base_model`."""

    prompt: str
    model: str
    base_model: str
    seconds: str
    size: str
    reference: Reference | None = None
    characters: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return dimensions(self.size)[0]

    @property
    def height(self) -> int:
        return dimensions(self.size)[1]


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job ended `failed`: the Video's `error` object."""

    code: str
    message: str


MODERATED = JobError(MODERATION_CODE, MODERATION_MESSAGE)
INTERNAL = JobError(INTERNAL_CODE, INTERNAL_MESSAGE)


@dataclass(frozen=True, slots=True)
class Timeline:
    """A job's whole life, fixed at creation: queued, generating, then done (or failed)."""

    queue_seconds: float
    generation_seconds: float
    error: JobError | None = None

    @property
    def total_seconds(self) -> float:
        return self.queue_seconds + self.generation_seconds


@dataclass(frozen=True, slots=True)
class Phase:
    status: Status
    progress: int

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed")


def dimensions(size: str) -> tuple[int, int]:
    width, _, height = size.partition("x")
    return int(width), int(height)


def new_video_id(random_bytes: bytes) -> str:
    """`video_` + 48 lowercase hex, from 24 bytes of randomness supplied by the caller."""
    if len(random_bytes) != VIDEO_ID_BYTES:
        raise ValueError(f"need {VIDEO_ID_BYTES} random bytes, got {len(random_bytes)}")
    return "video_" + random_bytes.hex()


def phase_at(elapsed: float, timeline: Timeline) -> Phase:
    """Status and progress `elapsed` seconds after creation: queued, in_progress 1..99, done."""
    if elapsed < timeline.queue_seconds:
        return Phase("queued", 0)
    running = elapsed - timeline.queue_seconds
    if running >= timeline.generation_seconds:
        if timeline.error is not None:
            return Phase("failed", 0 if timeline.generation_seconds == 0 else 99)
        return Phase("completed", 100)
    return Phase("in_progress", min(99, 1 + int(99 * running / timeline.generation_seconds)))


def completed_at(created_at: float, timeline: Timeline) -> int:
    """Unix second at which a job created at `created_at` finishes (fixed at creation)."""
    return math.ceil(created_at + timeline.queue_seconds + timeline.generation_seconds)


def expires_at(completed: int, after_seconds: int = EXPIRES_AFTER_SECONDS) -> int:
    return completed + after_seconds


def moderate(prompt: str, patterns: Sequence[re.Pattern[str]]) -> JobError | None:
    """The real API failed such jobs asynchronously with `moderation_blocked` (reference §2.3)."""
    for pattern in patterns:
        if pattern.search(prompt):
            return MODERATED
    return None


# Terminal-only actions. A job that will finish gets 409 (the clipline client treats 409 as
# "retry later"); a failed one gets 400, because waiting will not help (reference §5.3 and §12
# leave both UNCONFIRMED).
def check_downloadable(video_id: str, phase: Phase) -> Invalid | None:
    return check_source(video_id, phase, "its content is available once it is completed")


def check_source(video_id: str, phase: Phase, purpose: str) -> Invalid | None:
    """A video used as content or as the source of a remix/edit/extension must be completed."""
    if phase.status == "completed":
        return None
    if phase.status == "failed":
        return Invalid(f"Video '{video_id}' failed; {purpose}.", code="video_failed")
    return Invalid(f"Video '{video_id}' is {phase.status}; {purpose}.", code="video_not_ready")


def expired(video_id: str) -> Invalid:
    return Invalid(
        f"The content of video '{video_id}' has expired and is no longer available.",
        code="video_expired",
    )


def check_deletable(video_id: str, phase: Phase) -> Invalid | None:
    if phase.terminal:
        return None
    return Invalid(
        f"Video '{video_id}' is {phase.status}; only completed or failed videos can be deleted.",
        code="video_not_finished",
    )


def not_found(video_id: str) -> Invalid:
    return Invalid(f"Video with id '{video_id}' not found.", code="not_found")


def parse_variant(raw: str) -> Variant | Invalid:
    for variant in VARIANTS:
        if raw == variant:
            return variant
    return _invalid_value(raw, "variant", VARIANTS)


MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
INCORRECT_KEY = (
    "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)


def authorize(authorization: str | None, expected_key: str | None) -> Invalid | None:
    """None when allowed. Without an expected key any non-empty Bearer token passes."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if not authorization or scheme.lower() != "bearer" or not token:
        return Invalid(MISSING_KEY)  # the API's missing-key 401 carries code null
    if expected_key is not None and not hmac.compare_digest(
        token.encode("utf-8"), expected_key.encode("utf-8")
    ):
        return Invalid(INCORRECT_KEY, code="invalid_api_key")
    return None


def fold_form(fields: Sequence[tuple[str, object]]) -> dict[str, object] | Invalid:
    """Multipart fields to params, the way the SDKs encode nested values (brackets).

    `input_reference[image_url]=…` and `video[id]=…` become objects; `characters[][id]=…`
    (repeated) becomes an array of objects.
    """
    params: dict[str, object] = {}
    nested: set[str] = set()
    for name, value in fields:
        path = _bracket_path(name)
        if path is None or path[0] not in NESTED_PARAMS:
            if name in nested:
                return _mixed_form(name)
            params[name] = value
            continue
        outer, keys = path[0], path[1:]
        if outer in params and outer not in nested:
            return _mixed_form(outer)
        nested.add(outer)
        if keys[0] == "":
            items = params.setdefault(outer, [])
            if not isinstance(items, list) or len(keys) > 2:
                return _mixed_form(outer)
            if len(keys) == 1:
                items.append(value)
                continue
            if not items or not isinstance(items[-1], dict) or keys[1] in items[-1]:
                items.append({})
            items[-1][keys[1]] = value
        else:
            obj = params.setdefault(outer, {})
            if not isinstance(obj, dict) or len(keys) > 1:
                return _mixed_form(outer)
            obj[keys[0]] = value
    return params


_BRACKETS = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])+)")
_BRACKET_KEY = re.compile(r"\[([^\[\]]*)\]")


def _bracket_path(name: str) -> list[str] | None:
    match = _BRACKETS.fullmatch(name)
    if match is None:
        return None
    return [match.group(1), *_BRACKET_KEY.findall(match.group(2))]


def _mixed_form(name: str) -> Invalid:
    return Invalid(
        f"Invalid '{name}': send either a value or nested fields, not both.",
        param=name,
        code="invalid_value",
    )


def validate_create(
    params: Mapping[str, object],
    body: BodyKind,
    contract: Contract = LATEST,
    characters: Container[str] = frozenset(),
) -> CreateRequest | Invalid:
    """Check a create body (JSON object or folded multipart form) the way the API does.

    `characters` holds the ids of the characters that exist.
    """
    unknown = _unknown(params, KNOWN_PARAMS | ({"characters"} if contract.edits else set()))
    if unknown is not None:
        return unknown
    prompt = _prompt(params.get("prompt", _ABSENT))
    if isinstance(prompt, Invalid):
        return prompt
    model = _choice(params, "model", contract.models, DEFAULT_MODEL)
    if isinstance(model, Invalid):
        return model
    seconds = _choice(params, "seconds", contract.seconds, DEFAULT_SECONDS)
    if isinstance(seconds, Invalid):
        return seconds
    size = _size(params, contract, MODELS[model])
    if isinstance(size, Invalid):
        return size
    reference = _reference(params.get("input_reference"), body, size)
    if isinstance(reference, Invalid):
        return reference
    chosen = _characters(params.get("characters"), characters)
    if isinstance(chosen, Invalid):
        return chosen
    return CreateRequest(prompt, model, MODELS[model], seconds, size, reference, chosen)


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """A remix, edit or extension of an existing video (`seconds`: the extension's length)."""

    prompt: str
    video_id: str
    seconds: str | None = None


@dataclass(frozen=True, slots=True)
class CharacterRequest:
    name: str


def validate_remix(params: Mapping[str, object], video_id: str) -> SourceRequest | Invalid:
    unknown = _unknown(params, {"prompt"})
    if unknown is not None:
        return unknown
    prompt = _prompt(params.get("prompt", _ABSENT))
    return prompt if isinstance(prompt, Invalid) else SourceRequest(prompt, video_id)


def validate_edit(params: Mapping[str, object], body: BodyKind) -> SourceRequest | Invalid:
    """`POST /videos/edits`: a prompt and `video: {id}` (reference §7.2)."""
    unknown = _unknown(params, {"prompt", "video"})
    if unknown is not None:
        return unknown
    prompt = _prompt(params.get("prompt", _ABSENT))
    if isinstance(prompt, Invalid):
        return prompt
    video_id = _video_reference(params.get("video", _ABSENT), body)
    return video_id if isinstance(video_id, Invalid) else SourceRequest(prompt, video_id)


def validate_extension(
    params: Mapping[str, object], body: BodyKind, contract: Contract = LATEST
) -> SourceRequest | Invalid:
    """`POST /videos/extensions`: a prompt, the new segment's `seconds`, and `video: {id}`."""
    unknown = _unknown(params, {"prompt", "seconds", "video"})
    if unknown is not None:
        return unknown
    prompt = _prompt(params.get("prompt", _ABSENT))
    if isinstance(prompt, Invalid):
        return prompt
    if params.get("seconds") is None:
        return _missing("seconds")
    seconds = _choice(params, "seconds", contract.seconds, DEFAULT_SECONDS)
    if isinstance(seconds, Invalid):
        return seconds
    video_id = _video_reference(params.get("video", _ABSENT), body)
    if isinstance(video_id, Invalid):
        return video_id
    return SourceRequest(prompt, video_id, seconds)


def check_extension(video_id: str, total_seconds: int, extensions: int, add: int) -> Invalid | None:
    """At most MAX_EXTENSIONS extensions and MAX_TOTAL_SECONDS in all (reference §7.3)."""
    if extensions >= MAX_EXTENSIONS:
        return Invalid(
            f"Video '{video_id}' has already been extended {extensions} times; a video can be "
            f"extended at most {MAX_EXTENSIONS} times.",
            param="video",
            code="invalid_value",
        )
    if total_seconds + add > MAX_TOTAL_SECONDS:
        return Invalid(
            f"Invalid 'seconds': the extended video would be {total_seconds + add} seconds long, "
            f"but the maximum total length is {MAX_TOTAL_SECONDS} seconds.",
            param="seconds",
            code="invalid_value",
        )
    return None


def validate_character(params: Mapping[str, object]) -> CharacterRequest | Invalid:
    """`POST /videos/characters` (multipart only): `name` 1..80 and a `video` file."""
    unknown = _unknown(params, {"name", "video"})
    if unknown is not None:
        return unknown
    name = params.get("name", _ABSENT)
    if isinstance(name, _Absent):
        return _missing("name")
    if not isinstance(name, str):
        return _invalid_type("name", "a string", name)
    if not name or len(name) > CHARACTER_NAME_MAX_CHARS:
        return Invalid(
            f"Invalid 'name': expected a string of 1 to {CHARACTER_NAME_MAX_CHARS} characters, "
            f"but got {len(name)} characters.",
            param="name",
            code="invalid_value",
        )
    video = params.get("video", _ABSENT)
    if isinstance(video, _Absent):
        return _missing("video")
    if not isinstance(video, Upload):
        return _invalid_type("video", "a file", video)
    return CharacterRequest(name)


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = LIST_DEFAULT_LIMIT
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    ids: list[str]
    has_more: bool


def parse_list_query(query: Mapping[str, str]) -> ListQuery | Invalid:
    """`GET /videos` query: `limit` 0..100 (default 20), `order` asc|desc (default desc)."""
    limit = LIST_DEFAULT_LIMIT
    raw_limit = query.get("limit")
    if raw_limit is not None:
        if not re.fullmatch(r"-?[0-9]{1,9}", raw_limit):
            return _invalid_type("limit", "an integer", raw_limit)
        limit = int(raw_limit)
        if limit < 0:
            return Invalid(
                f"Invalid 'limit': integer below minimum value. Expected a value >= 0, but got "
                f"{limit} instead.",
                param="limit",
                code="integer_below_min_value",
            )
        if limit > LIST_MAX_LIMIT:
            return Invalid(
                f"Invalid 'limit': integer above maximum value. Expected a value <= "
                f"{LIST_MAX_LIMIT}, but got {limit} instead.",
                param="limit",
                code="integer_above_max_value",
            )
    order = query.get("order", "desc")
    if order == "asc":
        return ListQuery(limit, "asc", query.get("after") or None)
    if order == "desc":
        return ListQuery(limit, "desc", query.get("after") or None)
    return _invalid_value(order, "order", ORDERS)


def paginate(
    ordered: Sequence[str], position: Mapping[str, int], alive: Container[str], query: ListQuery
) -> Page | Invalid:
    """One page of the ids in creation order (`position`: id -> index, deleted ids included,
    so a cursor stays valid after its video is deleted)."""
    start = None
    if query.after is not None:
        start = position.get(query.after)
        if start is None:
            return Invalid(
                f"Invalid 'after': no video with id '{query.after}'.",
                param="after",
                code="invalid_value",
            )
    if query.order == "asc":
        indices = range(0 if start is None else start + 1, len(ordered))
    else:
        indices = range(len(ordered) - 1 if start is None else start - 1, -1, -1)
    ids: list[str] = []
    for index in indices:
        video_id = ordered[index]
        if video_id not in alive:
            continue
        if len(ids) == query.limit:
            return Page(ids, has_more=True)
        ids.append(video_id)
    return Page(ids, has_more=False)


def _unknown(params: Mapping[str, object], known: Container[str]) -> Invalid | None:
    for name in params:
        if name not in known:
            return Invalid(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    return None


def _missing(name: str) -> Invalid:
    return Invalid(
        f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
    )


def _video_reference(value: object, body: BodyKind) -> str | Invalid:
    """`video: {id}` (JSON) or `video[id]` (multipart). Uploaded videos are refused: the real API
    allowed them only for "eligible customers" (reference §7.2)."""
    if isinstance(value, _Absent) or value is None:
        return _missing("video")
    if isinstance(value, Upload):
        return Invalid(
            "Editing or extending uploaded videos is only available to eligible customers. "
            "Pass the id of a completed video as 'video.id'.",
            param="video",
            code="invalid_value",
        )
    if not isinstance(value, dict):
        return _invalid_type("video", "a file" if body == "form" else "an object", value)
    for key in value:
        if key != "id":
            return Invalid(
                f"Unknown parameter: 'video.{key}'.", param=f"video.{key}", code="unknown_parameter"
            )
    video_id = value.get("id")
    if video_id is None:
        return _missing("video.id")
    if not isinstance(video_id, str):
        return _invalid_type("video.id", "a string", video_id)
    return video_id


def _characters(value: object, known: Container[str]) -> tuple[str, ...] | Invalid:
    if value is None:
        return ()
    if not isinstance(value, list):
        return _invalid_type("characters", "an array", value)
    if len(value) > MAX_CHARACTERS:
        return Invalid(
            f"Invalid 'characters': array too long. Expected an array with maximum length "
            f"{MAX_CHARACTERS}, but got an array with length {len(value)} instead.",
            param="characters",
            code="array_above_max_length",
        )
    ids: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"id"} or not isinstance(item["id"], str):
            return _invalid_type(f"characters[{index}]", "an object with an 'id'", item)
        if item["id"] not in known:
            return Invalid(
                f"Character '{item['id']}' not found.",
                param=f"characters[{index}].id",
                code="invalid_value",
            )
        ids.append(item["id"])
    return tuple(ids)


class _Absent:
    pass


_ABSENT = _Absent()


def _prompt(value: object) -> str | Invalid:
    if isinstance(value, _Absent):
        return Invalid(
            "Missing required parameter: 'prompt'.",
            param="prompt",
            code="missing_required_parameter",
        )
    if not isinstance(value, str):
        return _invalid_type("prompt", "a string", value)
    if not value:
        return Invalid(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param="prompt",
            code="empty_string",
        )
    if len(value) > PROMPT_MAX_CHARS:
        return Invalid(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{PROMPT_MAX_CHARS}, but got a string with length {len(value)} instead.",
            param="prompt",
            code="string_above_max_length",
        )
    return value


def _choice(
    params: Mapping[str, object], name: str, allowed: tuple[str, ...], default: str
) -> str | Invalid:
    # An explicit JSON null means "use the default", as for other optional OpenAI parameters.
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        return _invalid_type(name, f"one of {_quoted(allowed, 'or')}", value)
    if value not in allowed:
        return _invalid_value(value, name, allowed)
    return value


def _size(params: Mapping[str, object], contract: Contract, base_model: str) -> str | Invalid:
    """The whole size enum is checked first, with the observed message (reference §6); a size
    that exists but not for this model gets its own message (UNCONFIRMED in the reference)."""
    size = _choice(params, "size", contract.sizes["sora-2-pro"], DEFAULT_SIZE)
    if isinstance(size, Invalid) or size in contract.sizes[base_model]:
        return size
    return Invalid(
        f"Invalid value: '{size}' for model '{base_model}'. Supported values are: "
        f"{_quoted(contract.sizes[base_model], 'and')}.",
        param="size",
        code="invalid_value",
    )


def _reference(value: object, body: BodyKind, size: str) -> Reference | Invalid | None:
    param = "input_reference"
    if value is None:
        return None
    if isinstance(value, Upload):
        media_type = REFERENCE_FORMATS.get(value.format or "")
        if media_type is None:
            return Invalid(
                "Invalid file format for 'input_reference'. Supported formats are: "
                f"{_quoted(tuple(REFERENCE_FORMATS.values()), 'and')}.",
                param=param,
                code="invalid_value",
            )
        if (value.width, value.height) != dimensions(size):
            # Text reported by a relay of the real API (reference §3.3); exact text UNCONFIRMED.
            return Invalid(
                "Inpaint image must match the requested width and height",
                param=param,
                code="invalid_value",
            )
        return Reference("file", media_type)
    if not isinstance(value, dict):
        return _invalid_type(param, "a file" if body == "form" else "an object", value)
    for key in value:
        if key not in REFERENCE_KEYS:
            return Invalid(
                f"Unknown parameter: '{param}.{key}'.",
                param=f"{param}.{key}",
                code="unknown_parameter",
            )
    present = [key for key in REFERENCE_KEYS if value.get(key) is not None]
    if len(present) != 1:
        return Invalid(
            "Invalid 'input_reference': provide exactly one of 'image_url' or 'file_id'.",
            param=param,
            code="invalid_value",
        )
    key = present[0]
    ref = value[key]
    if not isinstance(ref, str):
        return _invalid_type(f"{param}.{key}", "a string", ref)
    if not ref or len(ref) > IMAGE_URL_MAX_CHARS:
        return Invalid(
            f"Invalid '{param}.{key}': expected a non-empty string of at most "
            f"{IMAGE_URL_MAX_CHARS} characters.",
            param=f"{param}.{key}",
            code="invalid_value",
        )
    if key == "image_url" and not ref.startswith(("https://", "http://", "data:image/")):
        return Invalid(
            f"Invalid '{param}.image_url': expected a URL or a base64-encoded data URL.",
            param=f"{param}.image_url",
            code="invalid_value",
        )
    return Reference("image_url" if key == "image_url" else "file_id")


def _invalid_value(value: str, param: str, allowed: tuple[str, ...]) -> Invalid:
    return Invalid(
        f"Invalid value: '{value}'. Supported values are: {_quoted(allowed, 'and')}.",
        param=param,
        code="invalid_value",
    )


def _invalid_type(param: str, expected: str, value: object) -> Invalid:
    return Invalid(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _quoted(values: tuple[str, ...], conjunction: str) -> str:
    """'a', 'b', and 'c' (Oxford comma, as the API writes it); 'a' and 'b' for two."""
    quoted = [f"'{value}'" for value in values]
    if len(quoted) <= 2:
        return f" {conjunction} ".join(quoted)
    return ", ".join(quoted[:-1]) + f", {conjunction} " + quoted[-1]


def _kind(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a decimal"
        case str():
            return "a string"
        case list():
            return "an array"
        case Upload():
            return "a file"
        case _:
            return "an object"

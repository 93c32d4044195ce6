"""Simulator decisions: create validation, job timeline, ids, auth. Pure: no I/O, no clock."""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["queued", "in_progress", "completed", "failed"]
Variant = Literal["video", "thumbnail", "spritesheet"]
BodyKind = Literal["json", "form"]

VARIANTS: tuple[Variant, ...] = ("video", "thumbnail", "spritesheet")
SECONDS: tuple[str, ...] = ("4", "8", "12", "16", "20")
SORA_2_SIZES: tuple[str, ...] = ("720x1280", "1280x720")
SORA_2_PRO_SIZES: tuple[str, ...] = (
    *SORA_2_SIZES,
    "1024x1792",
    "1792x1024",
    "1080x1920",
    "1920x1080",
)
# Requested slug -> base model whose limits apply (reference §2.2, §6).
MODELS: dict[str, str] = {
    "sora-2": "sora-2",
    "sora-2-pro": "sora-2-pro",
    "sora-2-2025-10-06": "sora-2",
    "sora-2-pro-2025-10-06": "sora-2-pro",
    "sora-2-2025-12-08": "sora-2",
}
SIZES: dict[str, tuple[str, ...]] = {"sora-2": SORA_2_SIZES, "sora-2-pro": SORA_2_PRO_SIZES}
DEFAULT_MODEL, DEFAULT_SECONDS, DEFAULT_SIZE = "sora-2", "4", "720x1280"
PROMPT_MAX_CHARS = 32000
IMAGE_URL_MAX_CHARS = 20971520
KNOWN_PARAMS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
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
    """A multipart file part, as sniffed by the shell: image format (Pillow name) and size."""

    format: str | None
    width: int = 0
    height: int = 0


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

    @property
    def width(self) -> int:
        return dimensions(self.size)[0]

    @property
    def height(self) -> int:
        return dimensions(self.size)[1]


@dataclass(frozen=True, slots=True)
class Timeline:
    queue_seconds: float
    generation_seconds: float


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
        return Phase("completed", 100)
    return Phase("in_progress", min(99, 1 + int(99 * running / timeline.generation_seconds)))


def completed_at(created_at: float, timeline: Timeline) -> int:
    """Unix second at which a job created at `created_at` completes (fixed at creation)."""
    return math.ceil(created_at + timeline.queue_seconds + timeline.generation_seconds)


def expires_at(completed: int) -> int:
    return completed + EXPIRES_AFTER_SECONDS


# Terminal-only actions. Both refusals are 409: the clipline client treats 409 as "retry later",
# which is right for a job that will finish (reference §5.3 and §12.5 leave this UNCONFIRMED).
def check_downloadable(video_id: str, phase: Phase) -> Invalid | None:
    if phase.status == "completed":
        return None
    return Invalid(
        f"Video '{video_id}' is {phase.status}; its content is available once it is completed.",
        code="video_not_ready",
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
        return Invalid(MISSING_KEY, code="invalid_api_key")
    if expected_key is not None and not hmac.compare_digest(
        token.encode("utf-8"), expected_key.encode("utf-8")
    ):
        return Invalid(INCORRECT_KEY, code="invalid_api_key")
    return None


def fold_form(fields: Sequence[tuple[str, object]]) -> dict[str, object] | Invalid:
    """Multipart fields to params: `input_reference[image_url]=…` becomes a nested object."""
    params: dict[str, object] = {}
    nested: dict[str, dict[str, object]] = {}
    for name, value in fields:
        outer, bracket, rest = name.partition("[")
        if not (bracket and rest.endswith("]") and outer in KNOWN_PARAMS):
            if name in nested:
                return _mixed_form(name)
            params[name] = value
        elif outer in params and outer not in nested:
            return _mixed_form(outer)
        else:
            params[outer] = nested.setdefault(outer, {})
            nested[outer][rest[:-1]] = value
    return params


def _mixed_form(name: str) -> Invalid:
    return Invalid(
        f"Invalid '{name}': send either a value or nested fields, not both.",
        param=name,
        code="invalid_value",
    )


def validate_create(params: Mapping[str, object], body: BodyKind) -> CreateRequest | Invalid:
    """Check a create body (JSON object or folded multipart form) the way the API does."""
    for name in params:
        if name not in KNOWN_PARAMS:
            return Invalid(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    prompt = _prompt(params.get("prompt", _ABSENT))
    if isinstance(prompt, Invalid):
        return prompt
    model = _choice(params, "model", tuple(MODELS), DEFAULT_MODEL)
    if isinstance(model, Invalid):
        return model
    seconds = _choice(params, "seconds", SECONDS, DEFAULT_SECONDS)
    if isinstance(seconds, Invalid):
        return seconds
    size = _choice(params, "size", SIZES[MODELS[model]], DEFAULT_SIZE)
    if isinstance(size, Invalid):
        return size
    reference = _reference(params.get("input_reference"), body, size)
    if isinstance(reference, Invalid):
        return reference
    return CreateRequest(prompt, model, MODELS[model], seconds, size, reference)


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

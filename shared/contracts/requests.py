"""The job request other systems publish: clipline.job.requested.v1.<tenant> (JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from shared.contracts.events import SUBJECT_ROOT

REQUESTS_ROOT = f"{SUBJECT_ROOT}.requested"
"""Requests of every version: clipline.job.requested.<version>.<tenant>."""
REQUEST_SUBJECT_PREFIX = f"{REQUESTS_ROOT}.v1"

PROMPT_MAX_CHARS = 32_000
KEY_MAX_CHARS = 255
CALLBACK_URL_MAX_CHARS = 2048
Priority = Literal["high", "normal", "low"]
Kind = Literal["generate", "remix", "edit", "extend"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


def request_subject(tenant: str) -> str:
    """Where a request for `tenant` is published."""
    return f"{REQUEST_SUBJECT_PREFIX}.{tenant}"


def _whole_seconds(value: Any) -> Any:
    """An int, or a string of decimal digits (the OpenAI API sends "4"); never a bool."""
    if isinstance(value, bool):
        raise ValueError("seconds must be a whole number, not a boolean")
    if isinstance(value, str) and value.strip().isdecimal():  # what int() takes, no more
        return int(value.strip())
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("prompt must not be blank")
    return value


Seconds = Annotated[
    int,
    BeforeValidator(_whole_seconds),
    WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\s*[0-9]+\s*$"}]}
    ),
]
Prompt = Annotated[
    str, Field(min_length=1, max_length=PROMPT_MAX_CHARS), AfterValidator(_not_blank)
]


class JobRequestV1(BaseModel):
    """A job request as sent by a client: the one place for its fields, types, limits and defaults.

    `seconds` is accepted as an int or a numeric string (the OpenAI API uses strings) and read
    as an int. Which model, size and seconds are valid is the registry's call (intake checks).
    The tenant comes from the subject; if the body names one, it must match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    schema_version: Literal[1] = 1
    tenant: str | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=KEY_MAX_CHARS)
    model: str = "sora-2"
    size: str = Field(
        default="720x1280", description="WIDTHxHEIGHT; the default is the OpenAI Videos API's"
    )
    seconds: Seconds = 4
    prompt: Prompt
    priority: Priority = Field(
        default="normal",
        description="high, normal or low: under the upstream's rate limit, higher goes first",
    )
    input_reference: str | None = Field(
        default=None,
        description="optional first frame: a data URL (data:image/png;base64,...) of a JPEG, "
        "PNG or WebP image whose dimensions equal `size` (generate only)",
    )
    kind: Kind = Field(
        default="generate",
        description="generate, or remix / edit / extend a completed job of the same tenant "
        "(`source_job_id`): those take model and size from the source; remix and edit also "
        "its length, while an extension's `seconds` is the segment it adds (4, 8, 12, 16, 20)",
    )
    source_job_id: str | None = Field(
        default=None,
        max_length=64,
        description="the job to remix, edit or extend (required for those, refused otherwise)",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=CALLBACK_URL_MAX_CHARS,
        description="optional absolute http(s) URL that receives a signed POST when the job "
        "ends (docs/webhooks.md); no credentials in it",
    )


def request_default(field: str) -> Any:
    """A request field's default (model, size, seconds, priority): the CLI and docs use these."""
    return JobRequestV1.model_fields[field].default


def parse_request(body: Mapping[str, Any]) -> JobRequestV1 | dict[str, str]:
    """The request, or what refused it: each refused field's first error type (pydantic's names;
    `extra_forbidden` for an unknown field), for intake to explain in its own words."""
    try:
        return JobRequestV1.model_validate(dict(body))
    except ValidationError as exc:
        refused: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            refused.setdefault(field, error["type"])
        return refused

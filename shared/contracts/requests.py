"""The job request other systems publish: clipline.job.requested.v1.<tenant> (JSON)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.events import SUBJECT_ROOT

REQUESTS_ROOT = f"{SUBJECT_ROOT}.requested"
"""Requests of every version: clipline.job.requested.<version>.<tenant>."""
REQUEST_SUBJECT_PREFIX = f"{REQUESTS_ROOT}.v1"


def request_subject(tenant: str) -> str:
    """Where a request for `tenant` is published."""
    return f"{REQUEST_SUBJECT_PREFIX}.{tenant}"


class JobRequestV1(BaseModel):
    """A job request as sent by a client. Lenient on purpose: intake validates and explains.

    `seconds` is accepted as an int or a numeric string (the OpenAI API uses strings).
    The tenant comes from the subject; if the body names one, it must match.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    tenant: str | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    model: str = "sora-2"
    size: str = "720x1280"
    seconds: int | str = 4
    prompt: str
    priority: str = Field(
        default="normal",
        description="high, normal or low: under the upstream's rate limit, higher goes first",
    )
    input_reference: str | None = Field(
        default=None,
        description="optional first frame: a data URL (data:image/png;base64,...) of a JPEG, "
        "PNG or WebP image whose dimensions equal `size`",
    )

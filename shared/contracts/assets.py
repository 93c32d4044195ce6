"""The assets request/reply (core NATS, answered by storage): presign or delete a job's objects.

Subject `clipline.storage.assets.v1.<tenant>`: the tenant is the subject's token (intake publishes
for the caller's API key), so a job of another tenant is simply not found. Storage reads the job
RECORD for where the objects are; the request only names the job, the action and what it wants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.ids import JOB_ID_RE

ASSETS_ROOT = "clipline.storage.assets"
ASSETS_SUBJECT_FILTER = f"{ASSETS_ROOT}.v1.*"
ASSETS_QUEUE = "storage"
"""Storage replicas answer as one queue group: each request is answered once."""

Variant = Literal["video", "thumbnail", "spritesheet"]
AssetsError = Literal[
    "invalid_request",  # the request does not parse (a bug of the caller)
    "not_found",  # no such job for the subject's tenant
    "not_finished",  # the job has not ended: nothing stored yet (or still storing)
    "no_assets",  # the job ended without stored assets (failed, cancelled, ...)
    "deleted",  # the job's assets were deleted (presign only)
    "no_such_variant",  # the job has no stored object of the asked variant
    "unavailable",  # S3 or the job store cannot be reached now: retry
]


def assets_subject(tenant: str) -> str:
    return f"{ASSETS_ROOT}.v1.{tenant}"


def assets_tenant(subject: str) -> str | None:
    """The tenant token of an assets subject (None when the subject is not one)."""
    tokens = subject.split(".")
    if len(tokens) != 5 or ".".join(tokens[:3]) != ASSETS_ROOT or tokens[3] != "v1":
        return None
    return tokens[4]


class AssetsRequestV1(BaseModel):
    """Presign the job's stored variants (or one), or delete them all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(pattern=JOB_ID_RE.pattern)
    action: Literal["presign", "delete"]
    variant: Variant | None = None
    """presign: only this variant (None: every stored one)."""
    audience: Literal["public", "internal"] = "public"
    """public: URLs on CLIPLINE_S3_PUBLIC_URL (for callers outside); internal: on the endpoint
    the services use (intake streaming an object through)."""


class AssetUrlV1(BaseModel):
    """A presigned GET URL of one stored variant: a credential, never logged or recorded."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    variant: Variant
    url: str
    content_type: str
    size_bytes: int
    sha256: str


class AssetsReplyV1(BaseModel):
    """`error` None: done (`urls` for presign; a delete has none). `deleted_at`: when the job's
    assets were deleted (set by the first delete; a repeat deletes again, keeps the time)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str
    urls: list[AssetUrlV1] = []
    expires_at: datetime | None = None
    """When the URLs stop working."""
    deleted_at: datetime | None = None
    error: AssetsError | None = None
    detail: str | None = None

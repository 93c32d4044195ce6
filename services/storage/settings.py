"""storage settings (CLIPLINE_*; S3 under CLIPLINE_S3_*, upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from pydantic import Field

from services.storage.domain import CONCURRENT_STORES
from shared.config import CommonSettings


class StorageSettings(CommonSettings):
    http_port: int = 8084
    max_attempts: int = 8
    part_size_bytes: int = 5 * 1024 * 1024
    """S3 multipart part size (S3's minimum): memory per upload is a few parts (two uploading
    at once), whatever the asset size; S3's 10,000-part limit makes the largest asset ~48 GiB."""
    delete_upstream_after_store: bool = False
    """Delete the upstream's copy (DELETE /v1/videos/{id}) once the job is recorded `completed`:
    the video then lives only in S3. A failed delete is logged; it never fails the job."""
    concurrent_stores: int = Field(default=CONCURRENT_STORES, ge=1)
    """Jobs stored (downloaded and uploaded) at once by one process. Four times as many are
    taken from the stream, and a freed slot goes to the one whose upstream copy expires
    soonest (its `expires_at`, else an hour after generation)."""

"""storage settings (CLIPLINE_*; S3 under CLIPLINE_S3_*, upstream under CLIPLINE_UPSTREAM_*)."""

from __future__ import annotations

from shared.config import CommonSettings


class StorageSettings(CommonSettings):
    http_port: int = 8084
    max_attempts: int = 8
    part_size_bytes: int = 8 * 1024 * 1024
    """S3 multipart part size: memory per upload is about one part, whatever the asset size."""

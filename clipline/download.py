"""`clipline download`: a completed job's assets from the stack's S3 into local files, each
checked against the job record (size and sha256) before it takes its name."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from minio import Minio
from minio.error import S3Error

from shared.contracts import AssetRef, JobRecordV1
from shared.contracts.ids import JOB_ID_RE

if TYPE_CHECKING:
    from clipline.stack import StackState

VARIANTS = ("video", "thumbnail", "spritesheet")
CHUNK_BYTES = 1024 * 1024


class DownloadMismatch(Exception):
    """A downloaded file is not the object the job recorded; nothing was kept of it."""


class AssetGone(Exception):
    """S3 no longer has an object the job recorded (deleted since it was stored)."""


_GONE = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket"})


def gone(asset: AssetRef, code: str | None) -> str | None:
    """Why an asset cannot be downloaded when S3 answers `code` for it: the object (or its
    bucket) is no longer there, most likely removed by the retention setting; None for any
    other answer."""
    if code not in _GONE:
        return None
    return (
        f"s3://{asset.bucket}/{asset.key} is no longer in S3 ({code}): it was deleted after the "
        "job completed, e.g. by the storage retention (CLIPLINE_S3_RETENTION_DAYS, an S3 "
        "lifecycle rule) or by hand; the job record remains, its assets cannot be downloaded"
    )


@dataclass(frozen=True, slots=True)
class Saved:
    path: Path
    size_bytes: int
    sha256: str


class UnsafeRecord(Exception):
    """The job record names a file no download may write: a job id or variant that is not a
    valid one, or a name that would land outside the output folder. Nothing was written."""


# An object's extension as a file name takes it: a dot and a few letters or digits, or none.
_SUFFIX_RE = re.compile(r"^(\.[A-Za-z0-9]{1,10})?$")


def file_name(job_id: str, variant: str, key: str) -> str:
    """`<job_id>-<variant>.<ext>`, the extension that of the stored object (video.mp4 ...),
    built only from a valid job id (JOB_ID_RE), a known variant and a plain extension;
    UnsafeRecord for anything else (`../x`, an absolute path, a separator in the key's
    extension), so a record cannot choose where a file goes."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise UnsafeRecord(f"the record's job id {job_id!r} is not a valid job id (job_<32 hex>)")
    if variant not in VARIANTS:
        raise UnsafeRecord(f"the record's variant {variant!r} is not one of {', '.join(VARIANTS)}")
    suffix = PurePosixPath(key).suffix
    if not _SUFFIX_RE.fullmatch(suffix):
        raise UnsafeRecord(f"the stored object's extension {suffix!r} is not a plain extension")
    return f"{job_id}-{variant}{suffix}"


def target(directory: Path, job_id: str, asset: AssetRef) -> Path:
    """Where `asset` of job `job_id` is saved: `file_name(...)` inside `directory`, checked
    (resolved) to be a direct child of it; UnsafeRecord otherwise."""
    folder = directory.resolve()
    path = (folder / file_name(job_id, asset.variant, asset.key)).resolve()
    if path.parent != folder:
        raise UnsafeRecord(f"{path} is not inside {folder}")
    return path


def targets(
    record: JobRecordV1, asked_job_id: str, assets: Sequence[AssetRef], directory: Path
) -> list[tuple[AssetRef, Path]]:
    """Each asset and its file, every one checked before anything is written: the record must
    be of the asked job (its ids drive the names) and every name safe; UnsafeRecord else."""
    if record.job_id != asked_job_id:
        raise UnsafeRecord(
            f"the record's job id {record.job_id!r} is not the asked job {asked_job_id!r}"
        )
    return [(asset, target(directory, record.job_id, asset)) for asset in assets]


def problem(expected: AssetRef, size_bytes: int, sha256: str) -> str | None:
    """Why bytes of this size and sha256 are not the recorded asset, or None when they are."""
    if size_bytes != expected.size_bytes:
        return f"got {size_bytes} bytes, the record says {expected.size_bytes}"
    if sha256 != expected.sha256:
        return f"sha256 {sha256}, the record says {expected.sha256}"
    return None


def wanted(record: JobRecordV1, variants: Sequence[str]) -> tuple[list[AssetRef], list[str]]:
    """The record's assets of the asked variants (all when none asked), in the order asked,
    and the asked variants the record has no asset of."""
    asked = list(dict.fromkeys(variants or VARIANTS))
    by_variant = {a.variant: a for a in record.assets}
    return [by_variant[v] for v in asked if v in by_variant], [
        v for v in asked if v not in by_variant
    ]


def save(chunks: Iterable[bytes], target: Path, expected: AssetRef) -> Saved:
    """Write `chunks` to a temporary name beside `target`, hashing on the way; rename it to
    `target` only when its size and sha256 are the recorded ones, else delete it and raise
    DownloadMismatch. A failure midway leaves no file behind either."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    digest, size = hashlib.sha256(), 0
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if (why := problem(expected, size, digest.hexdigest())) is not None:
            raise DownloadMismatch(f"{target.name}: {why}")
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Saved(target, size, digest.hexdigest())


def s3_client(state: StackState) -> Minio:
    """The embedded stack's S3 (SeaweedFS on loopback), with the key `up` recorded."""
    return Minio(
        state.s3_endpoint,
        access_key=state.s3_access_key,
        secret_key=state.s3_secret_key,
        secure=False,
    )


def fetch(client: Minio, asset: AssetRef, target: Path) -> Saved:
    """Stream one stored asset from S3 into `target`, verified against its record; AssetGone
    when S3 no longer has it."""
    try:
        response = client.get_object(asset.bucket, asset.key)
    except S3Error as exc:
        if (why := gone(asset, exc.code)) is not None:
            raise AssetGone(why) from exc
        raise
    try:
        return save(response.stream(CHUNK_BYTES), target, asset)
    finally:
        response.close()
        response.release_conn()

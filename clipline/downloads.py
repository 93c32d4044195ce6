"""`clipline download`: a completed job's assets into local files, each checked against the
job's record (size and sha256): from the local stack's S3, or through the download links of a
remote intake (GET /v1/jobs/{id}/assets)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import urllib3
from minio.error import S3Error
from pydantic import ValidationError

from clipline import output
from clipline.download import (
    CHUNK_BYTES,
    AssetGone,
    DownloadMismatch,
    Saved,
    UnsafeRecord,
    fetch,
    s3_client,
    save,
    targets,
    wanted,
)
from clipline.remote import (
    OK,
    REFUSED,
    UNREACHABLE,
    USAGE,
    Api,
    Choice,
    CliError,
    Target,
    refusal,
    target,
)
from clipline.stack import require
from shared.contracts import AssetRef, JobRecordV1
from shared.contracts.ids import JOB_ID_RE


def run(args: argparse.Namespace, choice: Choice) -> int:
    """0 when every asked asset was saved; 1 when the job is not completed, has no such asset,
    the store no longer has it or a file does not match (nothing kept of it); 2 when it cannot
    be read; 3 for a bad job id or an -o that is not a folder."""
    if not JOB_ID_RE.fullmatch(args.job_id):
        raise CliError(USAGE, f"{args.job_id!r} is not a job id (job_ followed by 32 hex digits)")
    out: Path = args.output
    if out.exists() and not out.is_dir():
        raise CliError(USAGE, f"-o {out}: is a file, not a folder")
    where = target(choice, args.home, args.tenant)
    record = asyncio.run(_read(where, args.job_id))
    if record.status != "completed":
        raise CliError(REFUSED, f"job {record.job_id} is {record.status.value}, not completed: "
                                "nothing to download")  # fmt: skip
    assets, missing = wanted(record, args.variant or [])
    if missing:
        raise CliError(REFUSED, f"job {record.job_id} has no stored {', '.join(missing)}")
    try:
        planned = targets(record, args.job_id, assets, out)
    except UnsafeRecord as exc:
        raise CliError(REFUSED, f"job {args.job_id}: refused, nothing written: {exc}") from None
    links = {} if where.local is not None else asyncio.run(_links(where, args.job_id))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(USAGE, f"-o {out}: cannot make the folder: {exc.strerror}") from None
    for asset, path in planned:
        try:
            saved = _fetch(where, links, asset, path)
        except (DownloadMismatch, AssetGone) as exc:
            raise CliError(REFUSED, f"{asset.variant}: not kept: {exc}") from None
        output.line(f"{saved.path} ({saved.size_bytes} bytes, sha256 {saved.sha256[:16]}... "
                    "verified)")  # fmt: skip
    return OK


async def _read(where: Target, job_id: str) -> JobRecordV1:
    """The job's record, refused (nothing written) unless it is a record of this job."""
    async with Api(where) as api:
        raw = await api.record(job_id)
    try:
        record = JobRecordV1.model_validate(raw)
    except ValidationError as exc:
        raise CliError(REFUSED, f"job {job_id}: refused, nothing written: not a job record "
                                f"({exc.error_count()} problems)") from None  # fmt: skip
    if record.job_id != job_id:
        raise CliError(REFUSED, f"job {job_id}: refused, nothing written: the record names "
                                "another job id")  # fmt: skip
    return record


async def _links(where: Target, job_id: str) -> dict[str, str]:
    """Each variant's download link from a remote intake (GET /v1/jobs/{id}/assets, answering
    `{"data": [{"variant", "url", ...}]}` or `{"assets": [...]}`)."""
    async with Api(where) as api:
        response = await api.call("GET", f"/v1/jobs/{job_id}/assets")
    if response.status_code in (404, 405):
        raise CliError(
            REFUSED,
            f"job {job_id}: {where.url} gives no download links (GET /v1/jobs/{{id}}/assets);"
            " download it where its S3 is",
        )
    if not response.is_success:
        raise refusal(f"download links of {job_id}", response)
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return link_map(body)


def link_map(body: Any) -> dict[str, str]:
    """variant -> download link, from GET /v1/jobs/{id}/assets's answer (`{"assets": [...]}`,
    or `{"data": [...]}`); whatever is not one is left out."""
    items = body.get("data", body.get("assets")) if isinstance(body, dict) else body
    return {
        str(item["variant"]): str(item["url"])
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and item.get("variant") and item.get("url")
    }


def _fetch(where: Target, links: dict[str, str], asset: AssetRef, path: Path) -> Saved:
    if where.local is not None:
        try:
            return fetch(s3_client(require(where.local)), asset, path)
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            raise CliError(UNREACHABLE, f"{asset.variant}: cannot read s3://{asset.bucket}/"
                                        f"{asset.key}: {exc}") from None  # fmt: skip
    url = links.get(asset.variant)
    if url is None:
        raise AssetGone(f"the server gives no download link for the {asset.variant}")
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(60.0, connect=5.0)) as response:
            if response.status_code in (403, 404):
                raise AssetGone(f"the store answers {response.status_code} for it (expired?)")
            if not response.is_success:
                raise CliError(UNREACHABLE, f"{asset.variant}: the store answers "
                                            f"{response.status_code}")  # fmt: skip
            return save(_chunks(response), path, asset)
    except httpx.HTTPError as exc:
        raise CliError(UNREACHABLE, f"{asset.variant}: cannot download it: {exc}") from None


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_bytes(CHUNK_BYTES)

"""storage answers the assets request (core NATS `clipline.storage.assets.v1.<tenant>`, a queue
group of the replicas): fresh presigned URLs of a job's stored variants, or their deletion. What
is stored, and where, comes from the job RECORD of the subject's tenant, never from the request:
another tenant's job is not found, whatever its id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from services.storage.handlers import facts_of, forget
from services.storage.ports import Deps
from shared.contracts import AssetRef, JobRecordV1, JobStatus
from shared.contracts.assets import (
    ASSETS_QUEUE,
    ASSETS_SUBJECT_FILTER,
    AssetsReplyV1,
    AssetsRequestV1,
    AssetUrlV1,
    assets_tenant,
)
from shared.contracts.ids import is_valid_tenant
from shared.contracts.lifecycle import IllegalTransition, mark_deleted
from shared.telemetry import carried

log = logging.getLogger("clipline.storage.assets")
_TRACER = trace.get_tracer("clipline.storage.assets")


def _refused(job_id: str, error: Any, detail: str) -> AssetsReplyV1:
    return AssetsReplyV1(job_id=job_id, error=error, detail=detail)


def to_presign(
    record: JobRecordV1 | None, request: AssetsRequestV1
) -> list[AssetRef] | AssetsReplyV1:
    """The assets of the record to presign, or the refusal (pure)."""
    job_id = request.job_id
    if record is None:
        return _refused(job_id, "not_found", f"no job {job_id!r} for this tenant")
    if record.deleted_at is not None:
        return _refused(job_id, "deleted", f"the assets of {job_id} were deleted")
    if not record.terminal:
        return _refused(
            job_id, "not_finished", f"{job_id} is {record.status.value}: not stored yet"
        )
    if record.status != JobStatus.COMPLETED or not record.assets:
        return _refused(job_id, "no_assets", f"{job_id} is {record.status.value}: no assets")
    chosen = [a for a in record.assets if request.variant in (None, a.variant)]
    if not chosen:
        return _refused(job_id, "no_such_variant", f"{job_id} has no {request.variant} stored")
    return chosen


async def presign(deps: Deps, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1:
    record = await deps.jobs.get(tenant, request.job_id)
    chosen = to_presign(record, request)
    if isinstance(chosen, AssetsReplyV1):
        return chosen
    internal = request.audience == "internal"
    expires = datetime.now(UTC) + timedelta(seconds=deps.store.presign_seconds)
    urls = [
        AssetUrlV1(
            variant=a.variant,
            url=await deps.store.presign(a.key, internal=internal),
            content_type=a.content_type,
            size_bytes=a.size_bytes,
            sha256=a.sha256,
        )
        for a in chosen
    ]
    return AssetsReplyV1(job_id=request.job_id, urls=urls, expires_at=expires)


async def delete(deps: Deps, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1:
    """Mark the ended job deleted (so it is hidden at once), then delete its objects. A repeat
    deletes again (a first attempt may have failed half way) and keeps the first time."""
    job_id, now = request.job_id, datetime.now(UTC)

    def mark(record: JobRecordV1 | None) -> JobRecordV1 | None:
        if record is None or not record.terminal or record.deleted_at is not None:
            return None
        return mark_deleted(record, now)

    try:
        record = await deps.jobs.update(tenant, job_id, mark) or await deps.jobs.get(tenant, job_id)
    except IllegalTransition:  # moved on meanwhile: read again below
        record = await deps.jobs.get(tenant, job_id)
    if record is None:
        return _refused(job_id, "not_found", f"no job {job_id!r} for this tenant")
    if record.deleted_at is None:
        return _refused(
            job_id, "not_finished", f"{job_id} is {record.status.value}: delete it once ended"
        )
    await forget(deps.store, facts_of(record))
    return AssetsReplyV1(job_id=job_id, deleted_at=record.deleted_at)


async def answer(deps: Deps, subject: str, data: bytes) -> AssetsReplyV1:
    """The reply to one request on `subject` (never raises: an outage is `unavailable`)."""
    tenant = assets_tenant(subject)
    try:
        request = AssetsRequestV1.model_validate_json(data)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _refused("", "invalid_request", problem[:500])
    if tenant is None or not is_valid_tenant(tenant):
        return _refused(request.job_id, "invalid_request", f"{subject!r} names no tenant")
    try:
        if request.action == "delete":
            return await delete(deps, tenant, request)
        return await presign(deps, tenant, request)
    except Exception as exc:  # the job store or S3 unreachable: the caller retries
        log.warning(
            "storage: assets %s of %s failed: %s", request.action, request.job_id,
            type(exc).__name__,
        )  # fmt: skip
        return _refused(request.job_id, "unavailable", "storage cannot do it now; retry shortly")


Respond = Callable[[bytes], Awaitable[None]]


class AssetsResponder:
    """Subscribes the queue group once the broker is connected; each request is answered in a
    task of its own (a delete waits on S3: it must not hold up the presigns behind it)."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, connection: Any) -> None:
        self._sub = await connection.subscribe(
            ASSETS_SUBJECT_FILTER, queue=ASSETS_QUEUE, cb=self._on_message
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_message(self, msg: Any) -> None:
        task = asyncio.create_task(
            self._reply(msg.subject, msg.data, msg.reply, msg.respond, msg.headers)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(
        self,
        subject: str,
        data: bytes,
        reply: str,
        respond: Respond,
        headers: dict[str, str] | None,
    ) -> None:
        with (
            carried(headers),
            _TRACER.start_as_current_span("storage assets", kind=SpanKind.SERVER),
        ):
            answered = await answer(self._deps, subject, data)
        if reply:
            try:
                await respond(answered.model_dump_json().encode())
            except Exception:  # the connection dropped: the requester times out and retries
                log.warning("storage: could not answer an assets request", exc_info=True)

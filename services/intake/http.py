"""Intake's HTTP API: POST /v1/jobs (taken by the same rules as NATS requests), GET /v1/jobs,
GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel. Every endpoint needs `Authorization: Bearer
<API key>`, and the key decides the tenant: `X-Clipline-Tenant` is ignored, a body `tenant`
naming another tenant is refused, and another tenant's job is not found (404)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse

from services.intake.domain import decode
from services.intake.ports import Deps
from services.intake.usecases import AlreadyEnded, Refused, cancel, find, jobs_of, take
from shared.apikeys import Denied, authenticate
from shared.contracts.ids import JOB_ID_RE
from shared.streams import MAX_PAYLOAD_BYTES

log = logging.getLogger("clipline.intake.http")
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - 64 * 1024  # the same limit as a request over NATS
STATUS_OF = {"idempotency_conflict": 409, "source_not_found": 404, "source_not_completed": 409}


class Unauthorized(Exception):
    """No valid API key: answered 401 with the reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class KeysUnavailable(Exception):
    """The key store cannot be read: answered 503 (the caller retries)."""


def _error(
    code: int, reason: str, detail: str, field: str | None = None, **more: str
) -> JSONResponse:
    return JSONResponse(
        {"error": {"reason": reason, "detail": detail, "field": field, **more}}, code
    )


def _unavailable_read() -> JSONResponse:
    return _error(503, "unavailable", "job records cannot be read now; retry shortly")


def _not_found(job_id: str) -> JSONResponse:
    return _error(404, "not_found", f"no job {job_id!r} for this API key's tenant")


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsOf = Annotated[Deps, Depends(deps_of)]


async def tenant_of(request: Request, deps: DepsOf) -> str:
    """The tenant of the request's API key (Unauthorized without a valid one)."""
    try:
        found = await authenticate(
            deps.keys, request.headers.get("authorization"), datetime.now(UTC)
        )
    except Exception as exc:  # NATS or KV unreachable: not the caller's fault
        log.warning("intake: could not read the API keys", exc_info=True)
        raise KeysUnavailable from exc
    if isinstance(found, Denied):
        raise Unauthorized(found.detail)
    return found.tenant


Tenant = Annotated[str, Depends(tenant_of)]
router = APIRouter()


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit` (never buffers more than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


@router.post("/v1/jobs", status_code=202)
async def create_job(
    request: Request,
    deps: DepsOf,
    tenant: Tenant,
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    raw = await read_limited(request, MAX_BODY_BYTES)
    if raw is None:
        return _error(413, "invalid_request", f"body exceeds {MAX_BODY_BYTES} bytes")
    body = decode(raw)
    if isinstance(body, dict) and body.get("idempotency_key") is None:
        # A request without a key gets one here, so that even a 503 names a key to retry
        # with: the job may have been recorded before NATS failed.
        body["idempotency_key"] = idempotency_key or f"http:{uuid.uuid4().hex}"
    key = body.get("idempotency_key") if isinstance(body, dict) else None
    try:
        outcome = await take(
            deps, body, tenant, f"http:{uuid.uuid4().hex}",
            announce=False,  # answered here, with the reason
        )  # fmt: skip
    except Exception:  # NATS or KV unreachable: the job may or may not be recorded
        log.exception("intake: could not take an HTTP request")
        answer = _error(
            503, "unavailable",
            "the job could not be queued; retry with the same Idempotency-Key "
            "(it is the same job, and is queued then)",
        )  # fmt: skip
        if isinstance(key, str):
            answer.headers["Idempotency-Key"] = key
        return answer
    if isinstance(outcome, Refused):
        why = outcome.why
        return _error(STATUS_OF.get(why.reason, 422), why.reason, why.detail, why.field)
    record = outcome.record
    return JSONResponse(
        {"job_id": record.job_id, "tenant": record.tenant, "status": record.status.value},
        status_code=202 if outcome.new else 200,
    )


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """A job of the key's tenant: another tenant's job is not found, whatever its id."""
    try:
        record = await find(deps, tenant, job_id)
    except Exception:  # NATS or KV unreachable
        log.warning("intake: could not read job %s", job_id, exc_info=True)
        return _unavailable_read()
    if record is None:
        return _not_found(job_id)
    return JSONResponse(record.model_dump(mode="json"))


@router.post("/v1/jobs/{job_id}/cancel", status_code=202)
async def cancel_job(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """Ask to cancel a job of the key's tenant: 202 when asked now, 200 when it was already
    cancelling or cancelled, 409 when it ended otherwise, 404 when unknown (or another's)."""
    if not JOB_ID_RE.fullmatch(job_id):
        return _not_found(job_id)
    try:
        outcome = await cancel(deps, tenant, job_id)
    except Exception:  # NATS or KV unreachable: the cancel may or may not be recorded
        log.warning("intake: could not cancel job %s", job_id, exc_info=True)
        return _error(503, "unavailable", "the cancel could not be recorded; retry it")
    if outcome is None:
        return _not_found(job_id)
    if isinstance(outcome, AlreadyEnded):
        ended = outcome.record.status.value
        detail = f"job {job_id} is {ended}: nothing to cancel"
        return _error(409, "already_ended", detail, status=ended)
    return JSONResponse(
        outcome.record.model_dump(mode="json"), status_code=202 if outcome.new else 200
    )


@router.get("/v1/jobs")
async def list_jobs(deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """The key's tenant's jobs, in order of acceptance."""
    try:
        records = await jobs_of(deps, tenant)
    except Exception:  # NATS or KV unreachable
        log.warning("intake: could not list jobs of %s", tenant, exc_info=True)
        return _unavailable_read()
    return JSONResponse({"tenant": tenant, "jobs": [r.model_dump(mode="json") for r in records]})


async def _unauthorized(_: Request, exc: Exception) -> JSONResponse:
    detail = exc.detail if isinstance(exc, Unauthorized) else "unauthorized"
    answer = _error(401, "unauthorized", detail)
    answer.headers["WWW-Authenticate"] = 'Bearer realm="clipline"'
    return answer


async def _keys_unavailable(_: Request, __: Exception) -> JSONResponse:
    return _error(503, "unavailable", "API keys cannot be checked now; retry shortly")


def build_http(deps: Deps) -> FastAPI:
    """The API on `deps` (each endpoint gets them, and the caller's tenant, by dependency)."""
    api = FastAPI(title="clipline intake", openapi_url="/v1/openapi.json", docs_url=None)
    api.state.deps = deps
    api.include_router(router)
    from services.intake import facade, facade_assets  # noqa: PLC0415 (they import this module)

    api.include_router(facade_assets.router)
    api.include_router(facade.router)  # the OpenAI-compatible /v1/videos
    api.add_exception_handler(Unauthorized, _unauthorized)
    api.add_exception_handler(KeysUnavailable, _keys_unavailable)
    return api

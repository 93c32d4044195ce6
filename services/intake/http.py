"""Intake's HTTP API: POST /v1/jobs (taken by the same rules as NATS requests), GET /v1/jobs,
POST /v1/jobs/{id}/cancel."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from services.intake.domain import decode, tenant_problem
from services.intake.handlers import AlreadyEnded, Refused, cancel, take
from services.intake.ports import Deps
from shared.contracts.ids import JOB_ID_RE, is_valid_tenant
from shared.streams import MAX_PAYLOAD_BYTES

log = logging.getLogger("clipline.intake.http")
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - 64 * 1024  # the same limit as a request over NATS
STATUS_OF = {"idempotency_conflict": 409}


def _error(
    code: int, reason: str, detail: str, field: str | None = None, **more: str
) -> JSONResponse:
    return JSONResponse(
        {"error": {"reason": reason, "detail": detail, "field": field, **more}}, code
    )


def _unavailable_read() -> JSONResponse:
    return _error(503, "unavailable", "job records cannot be read now; retry shortly")


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


def build_http(deps: Deps) -> FastAPI:
    api = FastAPI(title="clipline intake", openapi_url="/v1/openapi.json", docs_url=None)

    @api.post("/v1/jobs", status_code=202)
    async def create_job(
        request: Request,
        idempotency_key: str | None = Header(default=None),
        x_clipline_tenant: str | None = Header(default=None),
    ) -> JSONResponse:
        raw = await read_limited(request, MAX_BODY_BYTES)
        if raw is None:
            return _error(413, "invalid_request", f"body exceeds {MAX_BODY_BYTES} bytes")
        body = decode(raw)
        tenant = x_clipline_tenant or (
            body.get("tenant") if isinstance(body, dict) and body.get("tenant") else None
        )
        if isinstance(body, dict) and body.get("idempotency_key") is None:
            # A request without a key gets one here, so that even a 503 names a key to retry
            # with: the job may have been recorded before NATS failed.
            body["idempotency_key"] = idempotency_key or f"http:{uuid.uuid4().hex}"
        key = body.get("idempotency_key") if isinstance(body, dict) else None
        try:
            outcome = await take(
                deps,
                body,
                str(tenant or deps.default_tenant),
                f"http:{uuid.uuid4().hex}",
                announce=False,  # answered here, with the reason
            )
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

    @api.get("/v1/jobs/{job_id}")
    async def get_job(
        job_id: str, x_clipline_tenant: str | None = Header(default=None)
    ) -> JSONResponse:
        """A job of the caller's tenant (X-Clipline-Tenant, else the default tenant): another
        tenant's job is not found, whatever its id."""
        tenant = x_clipline_tenant or deps.default_tenant
        if not is_valid_tenant(tenant):
            return _error(422, "invalid_tenant", tenant_problem(tenant))
        try:
            record = await deps.jobs.get(tenant, job_id) if JOB_ID_RE.match(job_id) else None
        except Exception:  # NATS or KV unreachable
            log.warning("intake: could not read job %s", job_id, exc_info=True)
            return _unavailable_read()
        if record is None:
            return _error(404, "not_found", f"no job {job_id!r} for tenant {tenant!r}")
        return JSONResponse(record.model_dump(mode="json"))

    @api.post("/v1/jobs/{job_id}/cancel", status_code=202)
    async def cancel_job(
        job_id: str, x_clipline_tenant: str | None = Header(default=None)
    ) -> JSONResponse:
        """Ask to cancel a job of the caller's tenant: 202 when asked now, 200 when it was
        already cancelling or cancelled, 409 when it ended otherwise, 404 when unknown."""
        tenant = x_clipline_tenant or deps.default_tenant
        if not is_valid_tenant(tenant):
            return _error(422, "invalid_tenant", tenant_problem(tenant))
        if not JOB_ID_RE.match(job_id):
            return _error(404, "not_found", f"no job {job_id!r} for tenant {tenant!r}")
        try:
            outcome = await cancel(deps, tenant, job_id)
        except Exception:  # NATS or KV unreachable: the cancel may or may not be recorded
            log.warning("intake: could not cancel job %s", job_id, exc_info=True)
            return _error(503, "unavailable", "the cancel could not be recorded; retry it")
        if outcome is None:
            return _error(404, "not_found", f"no job {job_id!r} for tenant {tenant!r}")
        if isinstance(outcome, AlreadyEnded):
            ended = outcome.record.status.value
            detail = f"job {job_id} is {ended}: nothing to cancel"
            return _error(409, "already_ended", detail, status=ended)
        return JSONResponse(
            outcome.record.model_dump(mode="json"), status_code=202 if outcome.new else 200
        )

    @api.get("/v1/jobs")
    async def list_jobs(x_clipline_tenant: str | None = Header(default=None)) -> JSONResponse:
        tenant = x_clipline_tenant or deps.default_tenant
        if not is_valid_tenant(tenant):
            return _error(422, "invalid_tenant", tenant_problem(tenant))
        try:
            found = await deps.jobs.list(tenant)
        except Exception:  # NATS or KV unreachable
            log.warning("intake: could not list jobs of %s", tenant, exc_info=True)
            return _unavailable_read()
        records = sorted(found, key=lambda r: r.history.get("accepted") or r.job_id)
        return JSONResponse(
            {"tenant": tenant, "jobs": [r.model_dump(mode="json") for r in records]}
        )

    return api

"""Intake's HTTP API: POST /v1/jobs (validate, then publish the request), GET /v1/jobs/{id}."""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from services.intake.domain import Invalid, Valid, decode, validate
from services.intake.handlers import check_input_image, job_id_of
from shared.contracts import request_subject
from shared.contracts.ids import JOB_ID_RE
from shared.jobstore import JobStore, request_hash
from shared.registry import Registry
from shared.runtime import Runtime
from shared.streams import JOBS_STREAM_NAME, MAX_PAYLOAD_BYTES

log = logging.getLogger("clipline.intake.http")
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - 64 * 1024  # the request is republished on NATS


def _error(status: int, reason: str, detail: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail, "field": field}}, status)


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


def build_http(rt: Runtime, registry: Registry, default_tenant: str) -> FastAPI:
    api = FastAPI(title="clipline intake", openapi_url="/v1/openapi.json", docs_url=None)
    jobs: JobStore = rt.jobs

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
            body.get("tenant") if isinstance(body, dict) and body.get("tenant") else default_tenant
        )
        if isinstance(body, dict) and idempotency_key and "idempotency_key" not in body:
            body["idempotency_key"] = idempotency_key
        decision = validate(body, str(tenant), registry)
        if isinstance(decision, Valid):
            decision = await check_input_image(decision) or decision
        if isinstance(decision, Invalid):
            return _error(422, decision.reason, decision.detail, decision.field)
        key = decision.idempotency_key or f"http:{uuid.uuid4().hex}"
        job_id = job_id_of(decision.tenant, key, "")
        existing = await jobs.get(job_id)
        if existing is not None and existing.request_hash != request_hash(decision.fingerprint):
            return _error(409, "idempotency_conflict", "idempotency key reused for another request")
        request_body = {**dict(body), "idempotency_key": key}
        try:
            # Recorded by the same consumer as NATS requests: one path, one set of rules.
            await rt.broker.publish(
                json.dumps(request_body).encode(),
                subject=request_subject(decision.tenant),
                headers={"Nats-Msg-Id": f"http:{job_id}", "content-type": "application/json"},
                stream=JOBS_STREAM_NAME,
            )
        except Exception:  # NATS unreachable or no stream ack: nothing was taken
            log.exception("intake: could not publish request for %s", job_id)
            return _error(
                503, "unavailable", "the job could not be queued; retry with the same key"
            )
        status = existing.status.value if existing else "requested"
        return JSONResponse(
            {"job_id": job_id, "tenant": decision.tenant, "status": status}, status_code=202
        )

    @api.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> JSONResponse:
        if not JOB_ID_RE.match(job_id):
            return _error(404, "not_found", f"no job {job_id!r}")
        record = await jobs.get(job_id)
        if record is None:
            return _error(404, "not_found", f"no job {job_id}")
        return JSONResponse(record.model_dump(mode="json"))

    return api

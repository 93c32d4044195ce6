"""Intake's HTTP API: POST /v1/jobs (taken by the same rules as NATS requests), GET /v1/jobs
(filtered, cursor pages), GET /v1/jobs/{id}, GET /v1/jobs/{id}/events (Server-Sent Events),
POST /v1/jobs/{id}/cancel; errors are problem details (problems.py). Every endpoint needs
`Authorization: Bearer <API key>`, and the key decides the tenant: `X-Clipline-Tenant` is
ignored, a body `tenant` naming another tenant is refused, and another tenant's job is not
found (404)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.intake import openapi
from services.intake.callbacks_view import callbacks_view
from services.intake.domain import Invalid, decode
from services.intake.follow import HEARTBEAT_SECONDS, event_stream
from services.intake.listing import DEFAULT_LIMIT, KINDS, MAX_LIMIT, encode_cursor, parse_query
from services.intake.openapi import JobList, JobTaken, answers, json_body, problems
from services.intake.ports import Deps
from services.intake.problems import Formatter, Problem, ProblemError, error_envelopes
from services.intake.spans import server_span
from services.intake.sse import resume_after
from services.intake.usecases import AlreadyEnded, Refused, cancel, find, jobs_of, take
from shared.apikeys import Denied, authenticate
from shared.contracts.ids import JOB_ID_RE
from shared.contracts.jobs import JobRecordV1
from shared.contracts.requests import JobRequestV1
from shared.streams import MAX_PAYLOAD_BYTES

log = logging.getLogger("clipline.intake.http")
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - 64 * 1024  # the same limit as a request over NATS
STATUS_OF = {"idempotency_conflict": 409, "source_not_found": 404, "source_not_completed": 409}
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="clipline"'}


def problem(
    status: int,
    reason: str,
    detail: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> ProblemError:
    """The error to raise for an answer `status` with `reason` (problems.py envelopes it)."""
    return ProblemError(Problem(status, reason, detail, field, extensions, headers or {}))


def _unavailable_read() -> ProblemError:
    return problem(503, "unavailable", "job records cannot be read now; retry shortly")


def _not_found(job_id: str) -> ProblemError:
    return problem(404, "not_found", f"no job {job_id!r} for this API key's tenant")


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


DepsOf = Annotated[Deps, Depends(deps_of)]


async def tenant_of(request: Request, deps: DepsOf) -> str:
    """The tenant of the request's API key (a 401 problem without a valid one)."""
    try:
        found = await authenticate(
            deps.keys, request.headers.get("authorization"), datetime.now(UTC)
        )
    except Exception as exc:  # NATS or KV unreachable: not the caller's fault
        log.warning("intake: could not read the API keys", exc_info=True)
        detail = "API keys cannot be checked now; retry shortly"
        raise problem(503, "unavailable", detail) from exc
    if isinstance(found, Denied):
        raise problem(401, "unauthorized", found.detail, headers=UNAUTHORIZED_HEADERS)
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


@router.post(
    "/v1/jobs",
    status_code=202,
    responses={
        **answers(JobTaken, 202, "a new job, queued"),
        **answers(JobTaken, 200, "the same request again (same Idempotency-Key): that job"),
        **problems(404, 409, 413, 422, 503),
    },
    openapi_extra=json_body(
        JobRequestV1, "the job; `tenant`, when named, must be the API key's tenant"
    ),
)
async def create_job(
    request: Request,
    deps: DepsOf,
    tenant: Tenant,
    idempotency_key: str | None = Header(default=None),
) -> JSONResponse:
    raw = await read_limited(request, MAX_BODY_BYTES)
    if raw is None:
        raise problem(413, "invalid_request", f"body exceeds {MAX_BODY_BYTES} bytes")
    body = decode(raw)
    if isinstance(body, dict) and body.get("idempotency_key") is None:
        # A request without a key gets one here, so that even a 503 names a key to retry
        # with: the job may have been recorded before NATS failed.
        body["idempotency_key"] = idempotency_key or f"http:{uuid.uuid4().hex}"
    key = body.get("idempotency_key") if isinstance(body, dict) else None
    try:
        with server_span(request, "POST", "/v1/jobs"):
            outcome = await take(
                deps, body, tenant, f"http:{uuid.uuid4().hex}",
                announce=False,  # answered here, with the reason
            )  # fmt: skip
    except Exception:  # NATS or KV unreachable: the job may or may not be recorded
        log.exception("intake: could not take an HTTP request")
        raise problem(
            503, "unavailable",
            "the job could not be queued; retry with the same Idempotency-Key "
            "(it is the same job, and is queued then)",
            headers={"Idempotency-Key": key} if isinstance(key, str) else None,
        ) from None  # fmt: skip
    if isinstance(outcome, Refused):
        why = outcome.why
        raise problem(STATUS_OF.get(why.reason, 422), why.reason, why.detail, why.field)
    record = outcome.record
    return JSONResponse(
        {"job_id": record.job_id, "tenant": record.tenant, "status": record.status.value},
        status_code=202 if outcome.new else 200,
    )


@router.get("/v1/jobs/{job_id}", responses={**answers(JobRecordV1), **problems(404, 503)})
async def get_job(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """A job of the key's tenant: another tenant's job is not found, whatever its id."""
    try:
        record = await find(deps, tenant, job_id)
    except Exception:  # NATS or KV unreachable
        log.warning("intake: could not read job %s", job_id, exc_info=True)
        raise _unavailable_read() from None
    if record is None:
        raise _not_found(job_id)
    return JSONResponse({**record.model_dump(mode="json"), **await callbacks_view(deps, record)})


@router.post(
    "/v1/jobs/{job_id}/cancel",
    status_code=202,
    responses={
        **answers(JobRecordV1, 202, "asked to cancel now"),
        **answers(JobRecordV1, 200, "already cancelling or cancelled"),
        **problems(404, 409, 503),
    },
)
async def cancel_job(job_id: str, deps: DepsOf, tenant: Tenant) -> JSONResponse:
    """Ask to cancel a job of the key's tenant: 202 when asked now, 200 when it was already
    cancelling or cancelled, 409 when it ended otherwise, 404 when unknown (or another's)."""
    if not JOB_ID_RE.fullmatch(job_id):
        raise _not_found(job_id)
    try:
        outcome = await cancel(deps, tenant, job_id)
    except Exception:  # NATS or KV unreachable: the cancel may or may not be recorded
        log.warning("intake: could not cancel job %s", job_id, exc_info=True)
        raise problem(503, "unavailable", "the cancel could not be recorded; retry it") from None
    if outcome is None:
        raise _not_found(job_id)
    if isinstance(outcome, AlreadyEnded):
        ended = outcome.record.status.value
        detail = f"job {job_id} is {ended}: nothing to cancel"
        raise problem(409, "already_ended", detail, job_status=ended)
    return JSONResponse(
        outcome.record.model_dump(mode="json"), status_code=202 if outcome.new else 200
    )


@router.get(
    "/v1/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `id` the stream sequence, `event` the event "
            "kind, `data` the event JSON; ends after the job's terminal event",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(404, 422, 503),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    deps: DepsOf,
    tenant: Tenant,
    last_event_id: Annotated[
        str | None, Header(description="resume after this event id (sent by the stream)")
    ] = None,
) -> StreamingResponse:
    """The job's events as Server-Sent Events: every stored one (after `Last-Event-ID`), then
    each new one, until the terminal one; a comment heartbeat while idle."""
    after = resume_after(last_event_id)
    if isinstance(after, Invalid):
        raise problem(422, after.reason, after.detail, after.field)
    if deps.events is None:
        raise problem(503, "unavailable", "this intake cannot follow job events")
    try:
        record = await find(deps, tenant, job_id)
    except Exception:  # NATS or KV unreachable
        log.warning("intake: could not read job %s", job_id, exc_info=True)
        raise _unavailable_read() from None
    if record is None:
        raise _not_found(job_id)
    idle: float = request.app.state.heartbeat_seconds
    return StreamingResponse(
        event_stream(deps, deps.events, tenant, job_id, after=after, idle_seconds=idle),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


TIME = {"format": "date-time"}


@router.get("/v1/jobs", responses={**answers(JobList), **problems(422, 503)})
async def list_jobs(
    *,
    deps: DepsOf,
    tenant: Tenant,
    status: Annotated[
        list[str] | None, Query(description="job status; repeat it or give a comma list")
    ] = None,
    kind: Annotated[
        list[str] | None, Query(description=f"job kind ({', '.join(KINDS)}); repeatable")
    ] = None,
    model: Annotated[list[str] | None, Query(description="model name; repeatable")] = None,
    created_after: Annotated[
        str | None, Query(description="accepted at or after (RFC 3339)", json_schema_extra=TIME)
    ] = None,
    created_before: Annotated[
        str | None, Query(description="accepted before (RFC 3339)", json_schema_extra=TIME)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(description="the previous page's next_cursor")] = None,
) -> JSONResponse:
    """The key's tenant's jobs, newest first (by accepted time, then job id), one page at a
    time: pass a page's `next_cursor` as `cursor` for the next."""
    query = parse_query(
        status=status, kind=kind, model=model, created_after=created_after,
        created_before=created_before, limit=limit, cursor=cursor,
    )  # fmt: skip
    if isinstance(query, Invalid):
        raise problem(422, query.reason, query.detail, query.field)
    try:
        records, more = await jobs_of(deps, tenant, query)
    except Exception:  # NATS or KV unreachable
        log.warning("intake: could not list jobs of %s", tenant, exc_info=True)
        raise _unavailable_read() from None
    answer = {
        "data": [r.model_dump(mode="json") for r in records],
        "next_cursor": encode_cursor(more) if more is not None else None,
        "tenant": tenant,
    }
    return JSONResponse(answer)


def build_http(
    deps: Deps,
    envelopes: Mapping[str, Formatter] | None = None,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> FastAPI:
    """The API on `deps` (each endpoint gets them, and the caller's tenant, by dependency).
    Errors answer RFC 9457 problem details, except under the OpenAI-compatible facade's
    `/v1/videos` (OpenAI's envelope) and any prefix of `envelopes`, which its formatter answers."""
    api = FastAPI(
        title="clipline intake",
        openapi_url="/v1/openapi.json",
        docs_url="/docs",
        redoc_url="/redoc",
    )
    api.state.deps = deps
    api.state.heartbeat_seconds = heartbeat_seconds
    api.include_router(router)
    from services.intake import (  # noqa: PLC0415 (they import this module)
        facade,
        facade_assets,
        timeline_http,
    )

    api.include_router(facade_assets.router)
    api.include_router(timeline_http.router)
    api.include_router(facade.router)  # the OpenAI-compatible /v1/videos
    formats = {facade.PREFIX: facade.openai_envelope, **(envelopes or {})}
    error_envelopes(api, formats)
    openapi.install(api, foreign_prefixes=tuple(formats))
    return api

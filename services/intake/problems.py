"""One error envelope per path prefix for intake's HTTP API: RFC 9457 problem details on the
native API, for our own refusals and the framework's (unknown route, 405, 422, 500) alike.

Handlers and dependencies raise `ProblemError(Problem(...))`; `error_envelopes(api, formats)`
installs the exception handlers that turn it, Starlette's HTTPException, FastAPI's
RequestValidationError and any unhandled exception into a `Problem`, and answer it with the
formatter of the longest matching path prefix (problem details when none matches)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as member
from http import HTTPStatus
from typing import Any

import nats.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.unavailable import UNAVAILABLE

log = logging.getLogger("clipline.intake.http")
PROBLEM_TYPES = "https://clipline.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
FRAMEWORK_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}
"""The reason of a framework error by status (our own errors name theirs)."""
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REQUEST_ID = "x-request-id"
"""The header naming an error answer (`req_<32 hex>`, as the OpenAI API's): quote it when
reporting one; a 500's is in intake's log line."""


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def with_request_id(problem: Problem, request_id: str | None = None) -> Problem:
    """`problem` with an `x-request-id` header (the one it has, `request_id`, or a new one)."""
    if any(name.lower() == REQUEST_ID for name in problem.headers):
        return problem
    return replace(problem, headers={**problem.headers, REQUEST_ID: request_id or new_request_id()})


@dataclass(frozen=True, slots=True)
class Problem:
    """An error answer, before it is put into an envelope."""

    status: int
    reason: str
    detail: str
    field: str | None = None
    extensions: Mapping[str, Any] = member(default_factory=dict)
    """More members of the problem (RFC 9457 extensions), e.g. `job_status`, `errors`."""
    headers: Mapping[str, str] = member(default_factory=dict)
    """Headers of the answer (Allow, WWW-Authenticate, Idempotency-Key, ...)."""


class ProblemError(Exception):
    """Raised by a handler or a dependency: answered as its problem, in the path's envelope."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


Formatter = Callable[[Problem], Response]
"""Builds the answer of a problem in one envelope."""


class ProblemDetails(BaseModel):
    """An error of clipline's native API (RFC 9457 problem details, application/problem+json).
    `reason` is the machine-readable cause to switch on; more members may follow."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description=f"{PROBLEM_TYPES}<reason>")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="one human sentence")
    reason: str = Field(description="machine-readable: not_found, unauthorized, ...")
    field: str | None = Field(description="the request field at fault, when one is")


def problem_body(problem: Problem) -> dict[str, Any]:
    """The problem details object of `problem` (extensions never replace a standard member)."""
    body: dict[str, Any] = dict(problem.extensions)
    body.update(
        type=PROBLEM_TYPES + problem.reason,
        title=_title(problem.status),
        status=problem.status,
        detail=problem.detail,
        reason=problem.reason,
        field=problem.field,
    )
    return body


def problem_details(problem: Problem) -> Response:
    """The native envelope: RFC 9457 problem details."""
    return JSONResponse(
        problem_body(problem),
        problem.status,
        headers=dict(problem.headers),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _field_of(loc: Sequence[Any]) -> str | None:
    """`("query", "limit")` -> "limit"; a body path is dotted (`input.size`)."""
    parts = (
        [str(p) for p in loc[1:]] if loc and loc[0] in ("query", "path", "header", "body") else []
    )
    return ".".join(parts) or None


def validation_problem(errors: Sequence[Mapping[str, Any]]) -> Problem:
    """FastAPI's 422 as a problem: the first error's field and message, and all of them."""
    listed = [
        {"field": _field_of(e.get("loc", ())), "detail": str(e.get("msg", "is not valid"))}
        for e in errors
    ]
    first = listed[0] if listed else {"field": None, "detail": "the request is not valid"}
    named = f"{first['field']}: " if first["field"] else ""
    return Problem(
        422, "invalid_request", f"{named}{first['detail']}", first["field"], {"errors": listed}
    )


def http_problem(exc: StarletteHTTPException) -> Problem:
    """An HTTPException raised by the framework (routing: 404, 405 with Allow) or by code."""
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else _title(status)
    if status == 404 and detail == _title(404):  # the router's: no route has this path
        detail = "no such endpoint"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"method not allowed here; allowed: {allowed}" if allowed else detail
    reason = FRAMEWORK_REASONS.get(status, "invalid_request" if status < 500 else "internal_error")
    return Problem(status, reason, detail, headers=dict(exc.headers or {}))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on this request's path (asked route by route:
    included routers nest routes)."""
    routes = request.app.router.routes
    return [
        method
        for method in METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


def error_envelopes(
    api: FastAPI,
    formats: Mapping[str, Formatter] | None = None,
    default: Formatter = problem_details,
) -> None:
    """Answer every error of `api` in one envelope per path prefix: `formats` maps a prefix
    (e.g. "/v1/videos") to its formatter, the longest matching prefix wins, `default` (problem
    details) answers everywhere else. Call it once, with every prefix, after the routes."""
    by_length = sorted((formats or {}).items(), key=lambda kv: len(kv[0]), reverse=True)

    def answer(request: Request, problem: Problem) -> Response:
        problem = with_request_id(problem)
        path = request.scope.get("path", "")
        for prefix, formatter in by_length:
            if path == prefix.rstrip("/") or path.startswith(prefix):
                return formatter(problem)
        return default(problem)

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return answer(request, exc.problem)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:  # Starlette names the first matching route's methods only
            allowed = ", ".join(allowed_methods(request))
            exc = StarletteHTTPException(405, headers={**(exc.headers or {}), "Allow": allowed})
        return answer(request, http_problem(exc))

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return answer(request, validation_problem(exc.errors()))

    async def on_nats(request: Request, exc: Exception) -> Response:
        # NATS did not answer in time or the connection is between servers (a cluster node
        # went down and its streams are choosing a new leader): the caller retries (a create
        # with the same Idempotency-Key is the same job, whether or not this one got through).
        if not isinstance(exc, UNAVAILABLE):
            return await on_crash(request, exc)
        log.warning("intake: NATS unavailable on %s: %s", request.scope.get("path"),
                    type(exc).__name__)  # fmt: skip
        problem = Problem(503, "unavailable", "NATS is not answering now; retry shortly",
                          headers={"Retry-After": "1"})  # fmt: skip
        return answer(request, problem)

    async def on_crash(request: Request, exc: Exception) -> Response:
        # The traceback goes to the log, never to the caller; the request id ties them.
        request_id = new_request_id()
        log.error("intake: unhandled error on %s (%s)", request.scope.get("path"), request_id,
                  exc_info=exc)  # fmt: skip
        problem = Problem(500, "internal_error", "an internal error occurred; it was logged")
        return answer(request, with_request_id(problem, request_id))

    api.add_exception_handler(ProblemError, on_problem)
    api.add_exception_handler(StarletteHTTPException, on_http)
    api.add_exception_handler(RequestValidationError, on_invalid)
    api.add_exception_handler(nats.errors.Error, on_nats)
    api.add_exception_handler(Exception, on_crash)

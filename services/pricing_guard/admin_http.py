"""The admin API's HTTP edges: the one error envelope, bodies read within a limit and decoded
without letting any malformed one become a 500, FastAPI's own refusals in the envelope."""

from __future__ import annotations

import json
import logging
from typing import Any

import nats.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.unavailable import UNAVAILABLE

log = logging.getLogger("clipline.pricing_guard.admin")

MAX_BODY_BYTES = 64 * 1024


def error(status: int, reason: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "detail": detail}}, status)


class BodyError(Exception):
    """A request body the admin API cannot take: answered `status` with the reason."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


async def json_body(request: Request, reason: str) -> Any:
    """The body decoded as JSON, read up to MAX_BODY_BYTES (413 past that, however sent);
    422 for bytes that are not JSON, nested past the parser's limit, or a number too long."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyError(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise BodyError(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw)
    except RecursionError:
        raise BodyError(422, reason, "the body is nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, a number past Python's digit limit
        raise BodyError(422, reason, f"the body is not JSON: {exc}"[:200]) from None


async def json_object(request: Request, reason: str) -> dict[str, Any]:
    """The body as a JSON object; `reason` names a refusal of the body (422)."""
    body = await json_body(request, reason)
    if not isinstance(body, dict):
        raise BodyError(422, reason, "the body must be a JSON object")
    return body


def add_error_handlers(api: FastAPI) -> None:
    """Every refusal in the envelope: bodies it cannot take, and FastAPI's own answers."""

    @api.exception_handler(BodyError)
    async def body_error(_: Request, exc: BodyError) -> JSONResponse:
        return error(exc.status, exc.reason, exc.detail)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own refusals (no such route, method not allowed) in the envelope too."""
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid")
        return error(exc.status_code, reason, str(exc.detail))

    @api.exception_handler(nats.errors.Error)
    async def nats_unavailable(request: Request, exc: nats.errors.Error) -> JSONResponse:
        """NATS did not answer in time (a cluster node down, its streams choosing a leader):
        the caller retries. Any other NATS error is a fault: 500, logged with its traceback."""
        if not isinstance(exc, UNAVAILABLE):
            log.error("admin: NATS error on %s", request.url.path, exc_info=exc)
            return error(500, "internal_error", "an internal error occurred; it was logged")
        log.warning("admin: NATS unavailable on %s: %s", request.url.path, type(exc).__name__)
        answer = error(503, "unavailable", "NATS is not answering now; retry shortly")
        answer.headers["Retry-After"] = "1"
        return answer

    @api.exception_handler(RequestValidationError)
    async def invalid_parameters(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(str(e.get("msg", e)) for e in exc.errors())
        return error(422, "invalid_request", problems[:300] or "invalid parameters")

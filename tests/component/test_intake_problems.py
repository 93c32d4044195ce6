"""One error envelope on every status: intake's own refusals and the framework's (unknown
route, 405, 413, 422, 500) answer RFC 9457 problem details; a path prefix can answer another
envelope (the OpenAI facade's)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response

from services.intake.adapters import probe_image
from services.intake.app import ApiFirst
from services.intake.http import MAX_BODY_BYTES, build_http
from services.intake.ports import Deps
from services.intake.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPES,
    Problem,
    ProblemError,
    error_envelopes,
)
from shared.contracts import Event
from shared.registry import load_registry
from tests.fakes import InMemoryApiKeys, InMemoryInputStore, InMemoryJobStore, bearer

SECRET = "sk-this-must-never-leave"


def assert_problem(r: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """The answer is a problem details object of `status` and `reason`, nothing else."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = r.json()
    assert body["type"] == PROBLEM_TYPES + reason
    assert (body["status"], body["reason"]) == (status, reason)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert "field" in body
    assert "error" not in body  # the old envelope is gone
    assert re.fullmatch(r"req_[0-9a-f]{32}", r.headers["x-request-id"])  # as the facade's
    return body


async def _noop(event: Event) -> None:
    return None


@pytest.fixture
async def intake() -> AsyncIterator[httpx.AsyncClient]:
    deps = Deps(
        InMemoryJobStore(),
        InMemoryInputStore(),
        _noop,
        load_registry().provider("simulator"),
        probe_image,
        InMemoryApiKeys(("default",)),
    )
    transport = httpx.ASGITransport(app=build_http(deps))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake", headers=bearer("default")
    ) as client:
        yield client


async def test_our_refusals_are_problems_with_the_reason_and_field(
    intake: httpx.AsyncClient,
) -> None:
    bad = await intake.post("/v1/jobs", json={"prompt": "x", "seconds": 5})
    body = assert_problem(bad, 422, "invalid_seconds")
    assert body["field"] == "seconds"

    missing = await intake.get("/v1/jobs/job_" + "0" * 32)
    assert assert_problem(missing, 404, "not_found")["field"] is None

    anonymous = await intake.get("/v1/jobs", headers={"Authorization": ""})
    assert_problem(anonymous, 401, "unauthorized")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/v1/nothing-here", "/v1/jobs/a/b/c", "/elsewhere"])
async def test_an_unknown_route_is_a_404_problem(intake: httpx.AsyncClient, path: str) -> None:
    assert_problem(await intake.get(path), 404, "not_found")


async def test_a_wrong_method_is_a_405_problem_with_allow(intake: httpx.AsyncClient) -> None:
    r = await intake.delete("/v1/jobs")

    body = assert_problem(r, 405, "method_not_allowed")
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert allowed == {"GET", "POST"}
    assert "GET" in body["detail"]


async def test_an_oversized_body_is_a_413_problem(intake: httpx.AsyncClient) -> None:
    r = await intake.post("/v1/jobs", content=b"x" * (MAX_BODY_BYTES + 1))

    assert_problem(r, 413, "invalid_request")


def _toy_api(formats: dict[str, Any] | None = None) -> FastAPI:
    """Routes that make the framework fail every way: typed params (422) and a crash (500)."""
    api = FastAPI()

    @api.get("/v1/things")
    async def things(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JSONResponse:
        return JSONResponse({"limit": limit})

    @api.get("/v1/crash")
    async def crash() -> JSONResponse:
        raise RuntimeError(f"connection to s3://key:{SECRET}@host failed")

    @api.get("/v1/videos/{video_id}")
    async def video(video_id: int) -> JSONResponse:
        if video_id == 0:
            raise ProblemError(Problem(404, "not_found", "no such video", "video_id"))
        return JSONResponse({"id": video_id})

    error_envelopes(api, formats)
    return api


def openai_error(problem: Problem) -> Response:
    """The facade's envelope, as the OpenAI API answers errors."""
    body = {"message": problem.detail, "type": "invalid_request_error",
            "param": problem.field, "code": problem.reason}  # fmt: skip
    return JSONResponse({"error": body}, problem.status, headers=dict(problem.headers))


async def _client(api: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: Starlette re-raises a crash after answering it (for the
    # server's log); the test looks at the answer.
    transport = httpx.ASGITransport(app=api, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
async def test_a_framework_422_is_a_problem_naming_the_field(limit: str) -> None:
    async with await _client(_toy_api()) as http:
        r = await http.get("/v1/things", params={"limit": limit})

    body = assert_problem(r, 422, "invalid_request")
    assert body["field"] == "limit"
    assert body["detail"].startswith("limit: ")
    assert body["errors"][0]["field"] == "limit"


async def test_an_unhandled_exception_is_a_500_problem_without_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with await _client(_toy_api()) as http:
        r = await http.get("/v1/crash")

    assert_problem(r, 500, "internal_error")
    [logged] = [rec for rec in caplog.records if rec.name == "clipline.intake.http"]
    assert r.headers["x-request-id"] in logged.getMessage()  # the log line a caller can name
    assert SECRET not in r.text
    assert "Traceback" not in r.text
    assert "RuntimeError" not in r.text


async def test_a_path_prefix_answers_its_own_envelope() -> None:
    api = _toy_api({"/v1/videos": openai_error})
    async with await _client(api) as http:
        ours = await http.get("/v1/nothing")
        missing = await http.get("/v1/videos/0")
        invalid = await http.get("/v1/videos/abc")
        unknown = await http.get("/v1/videos/1/nothing")
        wrong = await http.post("/v1/videos/1")

    assert_problem(ours, 404, "not_found")
    for r, status, code, param in (
        (missing, 404, "not_found", "video_id"),
        (invalid, 422, "invalid_request", "video_id"),
        (unknown, 404, "not_found", None),
        (wrong, 405, "method_not_allowed", None),
    ):
        assert r.status_code == status
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == code
        assert r.json()["error"]["param"] == param
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert wrong.headers["allow"] == "GET"
    for r in (missing, invalid, unknown, wrong):
        assert re.fullmatch(r"req_[0-9a-f]{32}", r.headers["x-request-id"])


async def test_intake_sends_every_path_but_healthz_to_the_api() -> None:
    """/docs, /redoc and unknown paths are the API's (its 404 problem), /healthz the broker
    app's."""
    seen: list[tuple[str, str]] = []

    def app(name: str) -> Any:
        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            seen.append((name, scope.get("path", scope["type"])))

        return asgi

    routes = ApiFirst("/", app("api"), app("stream"))
    for path in ("/v1/jobs", "/docs", "/redoc", "/nothing", "/healthz"):
        await routes({"type": "http", "path": path}, None, None)
    await routes({"type": "lifespan"}, None, None)

    assert seen == [
        ("api", "/v1/jobs"), ("api", "/docs"), ("api", "/redoc"), ("api", "/nothing"),
        ("stream", "/healthz"), ("stream", "lifespan"),
    ]  # fmt: skip

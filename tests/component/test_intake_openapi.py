"""Intake's OpenAPI document (/v1/openapi.json): real request bodies, problem details on every
error status (never FastAPI's HTTPValidationError), and /docs and /redoc served."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.intake.http import build_http
from services.intake.problems import PROBLEM_MEDIA_TYPE


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_http(None))  # type: ignore[arg-type]  # no deps read
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client


@pytest.fixture
async def document(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.get("/v1/openapi.json")  # needs no key: it is public
    assert r.status_code == 200
    found: dict[str, Any] = r.json()
    return found


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    found: dict[str, Any] = document
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()
    ]


def test_post_jobs_declares_its_request_body(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]
    schema = resolve(document, body["content"]["application/json"]["schema"])

    assert body["required"] is True
    assert schema["required"] == ["prompt"]
    assert {"model", "size", "seconds", "prompt", "input_reference", "idempotency_key"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False


def test_no_operation_declares_fastapis_validation_error(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in document["components"]["schemas"]


def test_every_error_status_is_a_problem(document: dict[str, Any]) -> None:
    seen = 0
    for method, path, op in operations(document):
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        assert {"401", "500"} <= set(errors), (method, path)
        if path.startswith("/v1/videos"):  # the OpenAI-compatible facade: OpenAI's envelope
            for status, response in errors.items():
                schema = resolve(document, response["content"]["application/json"]["schema"])
                assert set(schema["properties"]) == {"error"}, (method, path, status)
            continue
        for status, response in errors.items():
            assert list(response["content"]) == [PROBLEM_MEDIA_TYPE], (method, path, status)
            schema = resolve(document, response["content"][PROBLEM_MEDIA_TYPE]["schema"])
            assert {"type", "title", "status", "detail", "reason", "field"} <= set(
                schema["properties"]
            )
            seen += 1
    assert seen >= 10


def test_operations_need_the_bearer_key(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_are_served(http: httpx.AsyncClient, path: str) -> None:
    r = await http.get(path)

    assert r.status_code == 200
    assert "/v1/openapi.json" in r.text

"""Intake's OpenAPI document: the real request body of POST /v1/jobs (the endpoint reads the raw
body itself), problem details on every error status instead of FastAPI's HTTPValidationError,
and the Bearer scheme every operation needs."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from services.intake.problems import PROBLEM_MEDIA_TYPE, ProblemDetails
from shared.contracts.jobs import JobRecordV1
from shared.contracts.lifecycle import JobStatus
from shared.contracts.requests import JobRequestV1

COMPONENTS = "#/components/schemas/"
PROBLEM_REF = COMPONENTS + ProblemDetails.__name__
FASTAPI_422 = ("HTTPValidationError", "ValidationError")
ALWAYS = (401, 500)
"""Error statuses every operation may answer (a key refused; an internal error)."""


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for its error statuses (and those of every route): each a
    problem details object. FastAPI puts the model under application/json; `install` moves it
    to application/problem+json."""
    return {
        status: {"model": ProblemDetails, "description": HTTPStatus(status).phrase}
        for status in sorted({*statuses, *ALWAYS})
    }


def json_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model` (its schema is added by
    `install`), for an endpoint that reads and checks the raw body itself."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"$ref": COMPONENTS + model.__name__}}},
        }
    }


class JobTaken(BaseModel):
    """POST /v1/jobs: the job the request is (202 new, 200 the same request again)."""

    job_id: str
    tenant: str
    status: JobStatus


class JobList(BaseModel):
    """GET /v1/jobs: one page of the key's tenant's jobs, newest first."""

    data: list[JobRecordV1]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )
    tenant: str = Field(description="the API key's tenant")


def answers(
    model: type[BaseModel], status: int = 200, description: str = ""
) -> dict[int | str, dict[str, Any]]:
    """The `responses` entry of a route's success answer."""
    return {status: {"model": model, "description": description or HTTPStatus(status).phrase}}


BODY_MODELS: tuple[type[BaseModel], ...] = (JobRequestV1,)
"""Request bodies declared with `json_body`: their schemas go into the components."""


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope: what the facade under /v1/videos answers for every error."""

    error: OpenAIErrorBody


OPENAI_REF = COMPONENTS + OpenAIError.__name__


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a facade route for its error statuses (and those of every route):
    each OpenAI's error envelope."""
    return {
        status: {"model": OpenAIError, "description": HTTPStatus(status).phrase}
        for status in sorted({*statuses, *ALWAYS})
    }


def install(api: FastAPI, foreign_prefixes: Iterable[str] = ()) -> None:
    """Serve the document built by `document` (once, then cached) as `api.openapi()`.
    Operations under `foreign_prefixes` (another envelope's) keep their own error schemas."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = document(api, tuple(foreign_prefixes))
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def document(api: FastAPI, foreign_prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = get_openapi(
        title=api.title, version=api.version, description=api.description, routes=api.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        components[model.__name__] = model.model_json_schema(ref_template=COMPONENTS + "{model}")
    components[ProblemDetails.__name__] = ProblemDetails.model_json_schema(
        ref_template=COMPONENTS + "{model}"
    )
    components[OpenAIError.__name__] = OpenAIError.model_json_schema(
        ref_template=COMPONENTS + "{model}"
    )
    for path, operations in schema.get("paths", {}).items():
        foreign = path.startswith(foreign_prefixes)
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if not (status.isdigit() and int(status) >= 400):
                    continue
                if foreign:  # OpenAI's envelope, whatever FastAPI declared
                    response["content"] = {"application/json": {"schema": {"$ref": OPENAI_REF}}}
                else:
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}}
    if not _mentions(schema["paths"], FASTAPI_422):
        for name in FASTAPI_422:
            components.pop(name, None)
    schema["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "a tenant's API key: it decides the tenant",
        }
    }
    schema["security"] = [{"bearer": []}]
    return schema


def _mentions(node: Any, names: tuple[str, ...]) -> bool:
    """Whether any $ref under `node` names one of the `names` components."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix(COMPONENTS) in names:
            return True
        return any(_mentions(v, names) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, names) for v in node)
    return False

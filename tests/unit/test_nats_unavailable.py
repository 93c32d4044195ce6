"""NATS not answering (a cluster electing a leader) is a 503 with Retry-After, never a 500."""

from __future__ import annotations

import nats.errors
import nats.js.errors
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.intake.problems import error_envelopes
from services.pricing_guard.admin_http import add_error_handlers


def _raising(exc: Exception) -> FastAPI:
    api = FastAPI()

    @api.get("/v1/thing")
    async def thing() -> None:
        raise exc

    return api


@pytest.mark.parametrize(
    "exc",
    [
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionClosedError(),
    ],
)
def test_intake_answers_503_with_retry_after_when_nats_does_not_answer(exc: Exception) -> None:
    api = _raising(exc)
    error_envelopes(api)
    answer = TestClient(api, raise_server_exceptions=False).get("/v1/thing")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["reason"] == "unavailable"


def test_intake_still_answers_500_for_any_other_error() -> None:
    api = _raising(RuntimeError("boom"))
    error_envelopes(api)
    answer = TestClient(api, raise_server_exceptions=False).get("/v1/thing")
    assert answer.status_code == 500
    assert "boom" not in answer.text


def test_the_admin_api_answers_503_with_retry_after_when_nats_does_not_answer() -> None:
    api = _raising(nats.errors.TimeoutError())
    add_error_handlers(api)
    answer = TestClient(api, raise_server_exceptions=False).get("/v1/thing")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json() == {
        "error": {"reason": "unavailable", "detail": "NATS is not answering now; retry shortly"}
    }


@pytest.mark.parametrize(
    "exc",
    [nats.js.errors.NotFoundError(), nats.errors.MaxPayloadError(), nats.errors.BadSubjectError()],
)
def test_a_nats_error_that_is_no_outage_is_a_logged_500_not_a_retry(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    for install in (error_envelopes, add_error_handlers):
        api = _raising(exc)
        install(api)
        answer = TestClient(api, raise_server_exceptions=False).get("/v1/thing")
        assert answer.status_code == 500, (install, answer.text)
        assert "retry-after" not in answer.headers
    assert any(r.exc_info for r in caplog.records), "no traceback logged"

"""Intake's HTTP API in process: validation answers, limits, conflicts, NATS outages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.intake.domain import Valid, validate
from services.intake.http import MAX_BODY_BYTES, build_http
from shared.contracts import JobRecordV1, JobSpec, JobStatus
from shared.contracts.ids import job_id_for
from shared.jobstore import request_hash
from shared.registry import load_registry
from shared.runtime import Runtime, make_runtime
from tests.fakes import InMemoryInputStore, InMemoryJobStore

BODY = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a paper boat"}


class Publishes:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    async def __call__(self, message: bytes, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("nats is down")
        self.sent.append({"body": message, **kwargs})


def runtime(publish: Publishes) -> Runtime:
    rt = make_runtime("intake", "nats://127.0.0.1:1", TracerProvider())
    rt.jobs = InMemoryJobStore()
    rt.inputs = InMemoryInputStore()
    rt.broker.publish = publish  # type: ignore[method-assign,assignment]
    return rt


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, Publishes]]:
    publish = Publishes()
    rt = runtime(publish)
    app = build_http(rt, load_registry(), "default")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client, rt, publish


async def test_valid_request_is_queued_with_a_deterministic_job_id(
    api: tuple[httpx.AsyncClient, Runtime, Publishes],
) -> None:
    client, _, publish = api
    r = await client.post(
        "/v1/jobs", json=BODY, headers={"Idempotency-Key": "k1", "X-Clipline-Tenant": "acme"}
    )
    assert r.status_code == 202
    assert r.json() == {"job_id": job_id_for("acme", "k1"), "tenant": "acme", "status": "requested"}
    [sent] = publish.sent
    assert sent["subject"] == "clipline.job.requested.v1.acme"
    assert sent["headers"]["Nats-Msg-Id"] == f"http:{job_id_for('acme', 'k1')}"


async def test_invalid_request_is_answered_at_once_and_not_queued(
    api: tuple[httpx.AsyncClient, Runtime, Publishes],
) -> None:
    client, _, publish = api
    r = await client.post("/v1/jobs", json={**BODY, "size": "1792x1024"})
    assert r.status_code == 422
    assert r.json()["error"] == {
        "reason": "invalid_size",
        "detail": "size '1792x1024' is not valid for sora-2: 1280x720, 720x1280",
        "field": "size",
    }
    assert (await client.post("/v1/jobs", content=b"{not json")).status_code == 422
    assert publish.sent == []


async def test_oversized_body_is_refused(
    api: tuple[httpx.AsyncClient, Runtime, Publishes],
) -> None:
    client, _, publish = api
    r = await client.post("/v1/jobs", content=b"x" * (MAX_BODY_BYTES + 1))
    assert r.status_code == 413
    assert publish.sent == []


async def test_key_reused_for_another_request_conflicts(
    api: tuple[httpx.AsyncClient, Runtime, Publishes],
) -> None:
    client, rt, publish = api
    job_id = job_id_for("default", "k2")
    first = await client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "k2"})
    assert first.status_code == 202
    # Intake's consumer records the job; emulate that with the hash it would store.
    valid = validate({**BODY, "idempotency_key": "k2"}, "default", load_registry())
    assert isinstance(valid, Valid)
    record = JobRecordV1(
        job_id=job_id, tenant="default", status=JobStatus.SUBMITTED,
        spec=JobSpec.model_validate(BODY), idempotency_key="k2",
        request_hash=request_hash(valid.fingerprint),
    )  # fmt: skip
    await rt.jobs.update(job_id, lambda _: record)
    again = await client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "k2"})
    assert again.status_code == 202
    assert again.json()["status"] == "submitted"
    other = await client.post(
        "/v1/jobs", json={**BODY, "prompt": "a dog"}, headers={"Idempotency-Key": "k2"}
    )
    assert other.status_code == 409
    assert other.json()["error"]["reason"] == "idempotency_conflict"
    assert len(publish.sent) == 2


async def test_get_job_validates_the_id(api: tuple[httpx.AsyncClient, Runtime, Publishes]) -> None:
    client, _, _ = api
    assert (await client.get("/v1/jobs/a*b")).status_code == 404
    missing = await client.get(f"/v1/jobs/{job_id_for('acme', 'none')}")
    assert missing.status_code == 404
    assert missing.json()["error"]["reason"] == "not_found"


async def test_nats_outage_is_a_503_not_a_lost_job() -> None:
    rt = runtime(Publishes(fail=True))
    transport = httpx.ASGITransport(app=build_http(rt, load_registry(), "default"))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        r = await client.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "k3"})
    assert r.status_code == 503
    assert r.json()["error"]["reason"] == "unavailable"

"""Native `GET /v1/jobs/{id}/assets`: fresh presigned URLs asked of storage (in process here),
for the API key's tenant only; every refusal a typed error, an outage a 503."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest
from opentelemetry.sdk.trace import TracerProvider

from services.intake.adapters import NatsAssets
from shared.contracts import JobStatus
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1
from tests.component.facade_support import serving
from tests.component.harness import job_record, new_job_id
from tests.fakes import bearer


async def test_assets_of_a_completed_job_are_fresh_public_urls() -> None:
    async with serving() as s:
        job_id = new_job_id()
        record = s.completed(job_id)
        answer = await s.client.get(f"/v1/jobs/{job_id}/assets")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert [a["variant"] for a in body["assets"]] == ["video", "thumbnail", "spritesheet"]
        assert body["assets"][0]["url"].startswith(
            f"https://s3.test/clipline-assets/{record.assets[0].key}"
        )
        assert body["expires_at"]
        assert answer.headers["cache-control"] == "no-store"
        assert s.assets.asked[0][0] == "acme"  # asked for the key's tenant


async def test_another_tenants_job_is_404_and_storage_is_asked_for_the_keys_tenant() -> None:
    async with serving() as s:
        job_id = new_job_id()
        s.completed(job_id, tenant="globex")
        answer = await s.client.get(f"/v1/jobs/{job_id}/assets")
        assert answer.status_code == 404
        assert answer.json()["reason"] == "not_found"
        assert [t for t, _ in s.assets.asked] == ["acme"]
        mine = await s.client.get(f"/v1/jobs/{job_id}/assets", headers=bearer("globex"))
        assert mine.status_code == 200


async def test_refusals_and_outages_are_typed() -> None:
    async with serving() as s:
        running = new_job_id()
        s.jobs.put(job_record(running, JobStatus.GENERATING))
        answer = await s.client.get(f"/v1/jobs/{running}/assets")
        assert (answer.status_code, answer.json()["reason"]) == (409, "not_finished")
        bad = await s.client.get("/v1/jobs/not-a-job/assets")
        assert bad.status_code == 404
        assert len(s.assets.asked) == 1  # a malformed id never reaches storage
        done = new_job_id()
        s.completed(done)
        s.assets.down = True
        answer = await s.client.get(f"/v1/jobs/{done}/assets")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"


async def test_no_key_is_401() -> None:
    async with serving() as s:
        answer = await s.client.get(
            f"/v1/jobs/{new_job_id()}/assets", headers={"Authorization": ""}
        )
        assert answer.status_code == 401


class FakeConnection:
    """A NATS connection's `request`: records what was sent, answers or fails as told."""

    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer
        self.sent: list[tuple[str, bytes, dict[str, str] | None]] = []

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (nats-py's signature)
        headers: dict[str, str] | None,
    ) -> Any:
        self.sent.append((subject, payload, headers))
        if isinstance(self.answer, Exception):
            raise self.answer
        return SimpleNamespace(data=self.answer)


async def test_the_nats_adapter_asks_the_tenants_subject_in_the_callers_trace() -> None:
    job_id = new_job_id()
    reply = AssetsReplyV1(job_id=job_id, deleted_at=None)
    connection = FakeConnection(reply.model_dump_json().encode())
    assets = NatsAssets(lambda: connection)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("caller") as span:
        got = await assets.ask("acme", AssetsRequestV1(job_id=job_id, action="delete"))
    assert got == reply
    subject, payload, headers = connection.sent[0]
    assert subject == "clipline.storage.assets.v1.acme"
    assert AssetsRequestV1.model_validate_json(payload).action == "delete"
    assert headers is not None
    assert format(span.get_span_context().trace_id, "032x") in headers["traceparent"]


@pytest.mark.parametrize(
    "failure", [nats.errors.NoRespondersError(), nats.errors.TimeoutError(), b"not json"]
)
async def test_no_answer_from_storage_is_unavailable(failure: Exception | bytes) -> None:
    assets = NatsAssets(lambda: FakeConnection(failure))
    got = await assets.ask("acme", AssetsRequestV1(job_id=new_job_id(), action="presign"))
    assert got.error == "unavailable"

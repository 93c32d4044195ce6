"""intake on a real nats-server: poison requests are rejected once, idempotency holds under races.

Two intake replicas share the request consumer; the HTTP API runs under uvicorn on a free
loopback port. Every assertion reads the stream or the KV bucket, not the handlers' word.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider

from clipline.auth import AuthDir
from clipline.servers import LOOPBACK, free_port
from services.intake.adapters import probe_image
from services.intake.handlers import DURABLE, build_router
from services.intake.http import build_http
from services.intake.ports import Deps
from services.intake.usecases import job_id_of
from shared.apikeys import kv_api_keys
from shared.contracts import JobRecordV1, request_subject
from shared.contracts.ids import job_id_for
from shared.messaging import NO_TENANT
from shared.registry import load_registry
from shared.runtime import Platform, make_platform, wire
from shared.streams import JOBS_STREAM_NAME, REQUESTS_STREAM_NAME

pytestmark = pytest.mark.integration
PROVIDER = load_registry().provider("simulator")
PAIRS = 20


@dataclass
class Intake:
    platforms: list[Platform]
    deps: Deps
    http: httpx.AsyncClient


@pytest.fixture
async def intake(provisioned: str, nats_auth: AuthDir) -> AsyncIterator[Intake]:
    platforms: list[Platform] = []
    deps_of_first: Deps | None = None
    for _ in range(2):  # two replicas on one durable consumer
        creds = nats_auth.creds_file("intake")  # intake's own identity
        platform = make_platform("intake", provisioned, TracerProvider(), creds)
        router = build_router()
        keys = kv_api_keys(platform.broker)
        deps = Deps(platform.jobs, platform.inputs, router.emit, PROVIDER, probe_image, keys)
        wire(platform.broker, router, deps, platform.jobs)
        await platform.broker.start()
        platforms.append(platform)
        deps_of_first = deps_of_first or deps
    assert deps_of_first is not None
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_http(deps_of_first), host=LOOPBACK, port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{port}", timeout=30) as http:
            for _ in range(100):  # until uvicorn listens (bounded)
                if server.started:
                    break
                await asyncio.sleep(0.05)
            yield Intake(platforms, deps_of_first, http)
    finally:
        server.should_exit = True
        await serving
        for platform in platforms:
            await platform.broker.stop()


def body(prompt: str, key: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": prompt}
    if key is not None:
        b["idempotency_key"] = key
    return b


async def count_on(nc: Client, subject: str) -> int:
    info = await nc.jetstream().stream_info(JOBS_STREAM_NAME, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def rejections(nc: Client, subject: str, n: int) -> list[dict[str, Any]]:
    """The first `n` rejection events on `subject`, read from the stream (ordered consumer)."""
    js = nc.jetstream()
    sub = await js.subscribe(subject, ordered_consumer=True, stream=JOBS_STREAM_NAME)
    try:
        return [json.loads((await sub.next_msg(timeout=20)).data) for _ in range(n)]
    finally:
        await sub.unsubscribe()


async def settled(nc: Client) -> None:
    """Until intake's consumer has nothing pending, unacked or in flight (bounded)."""
    js = nc.jetstream()
    for _ in range(200):
        info = await js.consumer_info(REQUESTS_STREAM_NAME, DURABLE)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"intake consumer never settled: {info}")


async def test_poison_requests_are_rejected_once_with_a_reason(intake: Intake, nc: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    cases = {
        "bomb": (request_subject(tenant), b"[" * 200_000 + b"]" * 200_000, "invalid_request"),
        "garbage": (request_subject(tenant), b"\xff\xfe\x00 not json {", "invalid_request"),
        "types": (
            request_subject(tenant),
            json.dumps({"prompt": 42, "seconds": [4], "model": {"x": 1}}).encode(),
            "invalid_request",
        ),
        "no_tenant": (
            "clipline.job.requested.v1",
            json.dumps(body("p")).encode(),
            "invalid_tenant",
        ),
    }
    before = (await js.consumer_info(REQUESTS_STREAM_NAME, DURABLE)).num_redelivered
    for name, (subject, payload, _) in cases.items():
        await js.publish(subject, payload, headers={"Nats-Msg-Id": f"{tenant}-{name}"})
    await settled(nc)
    for name, (_, _, reason) in cases.items():
        owner = tenant if name != "no_tenant" else NO_TENANT
        job_id = job_id_of(owner, None, f"{owner}:{tenant}-{name}")
        rejected = f"clipline.job.rejected.v1.{owner}.{job_id}"
        assert await count_on(nc, rejected) == 1, name
        (event,) = await rejections(nc, rejected, 1)
        assert event["reason"] == reason, (name, event)
        assert event["detail"], name
        assert event["stage"] == "intake"
    info = await js.consumer_info(REQUESTS_STREAM_NAME, DURABLE)
    assert info.num_redelivered == before  # terminal on first sight: none delivered again
    assert info.num_ack_pending == 0


async def test_unknown_kind_is_refused_at_publish(nc: Client, intake: Intake) -> None:
    """The stream stores only known kinds: a publish of an unknown one fails at once for the
    publisher instead of being stored where nothing consumes it."""
    js = nc.jetstream()
    with pytest.raises(Exception, match=r"no response from stream|no responders"):
        await js.publish("clipline.job.bogus.v1.acme.job_x", b"{}", timeout=2)


async def test_concurrent_http_pairs_with_one_key_make_one_job_and_a_409(
    intake: Intake, nc: Client
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    keys = [f"race-{uuid.uuid4().hex}" for _ in range(PAIRS)]
    api_key = (await intake.deps.keys.create(tenant, "race", datetime.now(UTC))).key

    async def post(key: str, prompt: str) -> httpx.Response:
        return await intake.http.post(
            "/v1/jobs",
            json=body(prompt),
            headers={"Idempotency-Key": key, "Authorization": f"Bearer {api_key}"},
        )

    calls = [post(key, f"{side} {key}") for key in keys for side in ("left", "right")]
    answers = await asyncio.gather(*calls)
    for i, key in enumerate(keys):
        pair = answers[2 * i : 2 * i + 2]
        codes = sorted(r.status_code for r in pair)
        assert codes == [202, 409], (key, [r.text for r in pair])
        winner = next(r for r in pair if r.status_code == 202).json()
        loser = next(r for r in pair if r.status_code == 409).json()
        assert loser["reason"] == "idempotency_conflict"
        job_id = job_id_for(tenant, key)
        assert winner["job_id"] == job_id
        record = await intake.deps.jobs.get(tenant, job_id)
        assert record is not None
        side = "left" if pair[0].status_code == 202 else "right"
        assert record.spec.prompt == f"{side} {key}"  # the accepted body is the stored one
    assert len(await intake.deps.jobs.list(tenant)) == PAIRS
    # The same key with the same body, concurrently, is the same job.
    same = await asyncio.gather(*(post("same-body", "again") for _ in range(6)))
    assert sorted(r.status_code for r in same) == [200] * 5 + [202]
    assert len({r.json()["job_id"] for r in same}) == 1


async def test_concurrent_nats_pairs_with_one_key_make_one_job_and_a_conflict(
    intake: Intake, nc: Client
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    keys = [f"race-{uuid.uuid4().hex}" for _ in range(PAIRS)]
    sends = [
        js.publish(
            request_subject(tenant),
            json.dumps(body(f"{side} {key}", key)).encode(),
            headers={"Nats-Msg-Id": f"{key}-{side}"},
        )
        for key in keys
        for side in ("left", "right")
    ]
    await asyncio.gather(*sends)
    await settled(nc)
    records: dict[str, JobRecordV1] = {r.job_id: r for r in await intake.deps.jobs.list(tenant)}
    assert len(records) == PAIRS
    for key in keys:
        record = records[job_id_for(tenant, key)]
        winner = record.spec.prompt.split(" ", 1)[0]
        loser = "right" if winner == "left" else "left"
        refused = job_id_of(tenant, None, f"{tenant}:{key}-{loser}")
        subject = f"clipline.job.rejected.v1.{tenant}.{refused}"
        assert await count_on(nc, subject) == 1, key
        (event,) = await rejections(nc, subject, 1)
        assert event["reason"] == "idempotency_conflict"
        # The requester finds its answer by its own message id and key.
        assert (event["request_id"], event["idempotency_key"]) == (f"{key}-{loser}", key)
        kept = job_id_of(tenant, None, f"{tenant}:{key}-{winner}")
        assert await count_on(nc, f"clipline.job.rejected.v1.{tenant}.{kept}") == 0
        assert await count_on(nc, f"clipline.job.accepted.v1.{tenant}.{record.job_id}") == 1

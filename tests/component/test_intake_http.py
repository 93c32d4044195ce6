"""Intake's HTTP API in process: jobs recorded by the same rules as NATS requests, answered
with the outcome; limits, conflicts, reads per tenant (the API key's), and outages as 503."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.intake.adapters import probe_image
from services.intake.http import MAX_BODY_BYTES, build_http
from services.intake.ports import Deps
from shared.contracts import Event, JobAcceptedV1, JobRecordV1, JobStatus
from shared.contracts.ids import fact_event_id, job_id_for
from shared.registry import load_registry
from tests.component.support import FlakyJobStore
from tests.fakes import InMemoryApiKeys, InMemoryInputStore, InMemoryJobStore, bearer

BODY = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a paper boat"}
TENANTS = ("default", "acme", "globex", "b")
"""Tenants with a key in `serving`'s store; requests carry the default tenant's unless told."""
ACME = bearer("acme")


@dataclass
class Emitted:
    """The emitter intake would publish with; fails while `down` (NATS unreachable)."""

    events: list[Event] = field(default_factory=list)
    down: bool = False

    async def __call__(self, event: Event) -> None:
        if self.down:
            raise ConnectionError("nats is down")
        self.events.append(event)


@dataclass
class Api:
    client: httpx.AsyncClient
    jobs: InMemoryJobStore
    emitted: Emitted
    keys: InMemoryApiKeys

    async def post(
        self, body: Any = BODY, key: str | None = None, **headers: str
    ) -> httpx.Response:
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.client.post("/v1/jobs", json=body, headers=headers)


@asynccontextmanager
async def serving(
    jobs: InMemoryJobStore, keys: InMemoryApiKeys | None = None
) -> AsyncIterator[Api]:
    """The HTTP API on in-memory ports, with an emitter that records what it would publish."""
    emitted = Emitted()
    keys = keys if keys is not None else InMemoryApiKeys(TENANTS)
    deps = Deps(
        jobs,
        InMemoryInputStore(),
        emitted,
        load_registry().provider("simulator"),
        probe_image,
        keys,
    )
    transport = httpx.ASGITransport(app=build_http(deps))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake", headers=bearer("default")
    ) as client:
        yield Api(client, jobs, emitted, keys)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serving(InMemoryJobStore()) as a:
        yield a


def accepted(api: Api) -> list[JobAcceptedV1]:
    return [e for e in api.emitted.events if isinstance(e, JobAcceptedV1)]


async def test_valid_request_is_recorded_and_announced(api: Api) -> None:
    r = await api.post(key="k1", **ACME)

    job_id = job_id_for("acme", "k1")
    assert r.status_code == 202
    assert r.json() == {"job_id": job_id, "tenant": "acme", "status": "accepted"}
    record = await api.jobs.get("acme", job_id)
    assert record is not None
    assert (record.status, record.idempotency_key, record.spec.prompt) == (
        JobStatus.ACCEPTED,
        "k1",
        "a paper boat",
    )
    [event] = accepted(api)
    assert event.event_id == fact_event_id(job_id, "accepted")
    assert (event.job_id, event.tenant, event.spec) == (job_id, "acme", record.spec)
    assert api.emitted.events == [event]


async def test_same_key_and_body_again_is_the_same_job(api: Api) -> None:
    first = await api.post(key="k1", **ACME)
    again = await api.post(key="k1", **ACME)

    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    assert api.jobs.writes == [job_id_for("acme", "k1")]  # recorded once
    ids = {e.event_id for e in accepted(api)}
    assert ids == {fact_event_id(job_id_for("acme", "k1"), "accepted")}  # one fact


async def test_key_reused_for_another_request_conflicts(api: Api) -> None:
    await api.post(key="k2")
    other = await api.post({**BODY, "prompt": "a dog"}, key="k2")

    assert other.status_code == 409
    error = other.json()
    assert error["reason"] == "idempotency_conflict"
    assert job_id_for("default", "k2") in error["detail"]
    record = await api.jobs.get("default", job_id_for("default", "k2"))
    assert record is not None
    assert record.spec.prompt == "a paper boat"
    assert len(api.emitted.events) == 1  # the refusal is answered, not announced


async def test_retry_after_the_job_moved_on_reports_its_state_and_announces_nothing(
    api: Api,
) -> None:
    await api.post(key="k3")
    job_id = job_id_for("default", "k3")
    record = await api.jobs.get("default", job_id)
    assert record is not None
    api.jobs.put(record.model_copy(update={"status": JobStatus.SUBMITTED}))
    again = await api.post(key="k3")

    assert again.status_code == 200
    assert again.json()["status"] == "submitted"
    assert len(api.emitted.events) == 1


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        ({**BODY, "size": "1792x1024"}, "invalid_size", "size"),
        ({**BODY, "prompt": 7}, "invalid_request", "prompt"),
        ({**BODY, "colour": "blue"}, "invalid_request", "colour"),
        ([BODY], "invalid_request", None),
        ({**BODY, "tenant": "globex"}, "invalid_tenant", None),  # the key is acme's
    ],
)
async def test_invalid_request_is_answered_at_once_and_never_recorded(
    api: Api, body: Any, reason: str, field: str | None
) -> None:
    r = await api.post(body, key="k4", **ACME)

    assert r.status_code == 422
    error = r.json()
    assert (error["reason"], error["field"]) == (reason, field)
    assert error["detail"]
    assert api.jobs.records() == {}
    assert api.emitted.events == []  # not announced on NATS


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xff\xfe garbage", b"[" * 100_000 + b"]" * 100_000],
    ids=["not-json", "garbage", "nesting-bomb"],
)
async def test_undecodable_body_is_a_422(api: Api, raw: bytes) -> None:
    r = await api.client.post("/v1/jobs", content=raw)

    assert r.status_code == 422
    assert r.json()["reason"] == "invalid_request"
    assert api.jobs.records() == {}
    assert api.emitted.events == []


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


async def test_oversized_body_is_refused_declared_or_streamed(api: Api) -> None:
    declared = await api.client.post("/v1/jobs", content=b"x" * (MAX_BODY_BYTES + 1))
    streamed = await api.client.post("/v1/jobs", content=chunks(MAX_BODY_BYTES + 1))

    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.json()["reason"] == "invalid_request"
    assert api.jobs.records() == {}
    assert api.emitted.events == []


async def test_tenant_comes_from_the_key_never_a_header_or_the_body(api: Api) -> None:
    spoofed = await api.post(key="k5", **{"X-Clipline-Tenant": "globex"})
    same = await api.post({**BODY, "tenant": "default"}, key="k5b")
    other = await api.post({**BODY, "tenant": "globex"}, key="k5c")

    assert spoofed.json()["job_id"] == job_id_for("default", "k5")  # the header is ignored
    assert spoofed.json()["tenant"] == "default"
    assert same.json()["job_id"] == job_id_for("default", "k5b")
    assert other.status_code == 422  # a body naming another tenant is refused
    assert other.json()["reason"] == "invalid_tenant"
    assert {r.tenant for r in api.jobs.records().values()} == {"default"}


async def test_idempotency_key_in_the_body_wins_over_the_header(api: Api) -> None:
    r = await api.post({**BODY, "idempotency_key": "in-body"}, key="in-header")

    assert r.json()["job_id"] == job_id_for("default", "in-body")


async def test_request_without_any_key_is_a_new_job_each_time(api: Api) -> None:
    a, b = await api.post(), await api.post()

    assert (a.status_code, b.status_code) == (202, 202)
    assert a.json()["job_id"] != b.json()["job_id"]
    assert len(api.jobs.records()) == 2


async def test_get_job_by_id_in_its_tenant(api: Api) -> None:
    job_id = (await api.post(key="k6", **ACME)).json()["job_id"]

    default = await api.client.get(f"/v1/jobs/{job_id}")  # the default tenant's view
    scoped = await api.client.get(f"/v1/jobs/{job_id}", headers=ACME)
    elsewhere = await api.client.get(f"/v1/jobs/{job_id}", headers=bearer("globex"))
    spoofed = await api.client.get(f"/v1/jobs/{job_id}", headers={"X-Clipline-Tenant": "acme"})

    assert scoped.status_code == 200
    record = JobRecordV1.model_validate(scoped.json())
    assert (record.job_id, record.tenant, record.status) == (job_id, "acme", JobStatus.ACCEPTED)
    assert default.status_code == 404  # another tenant's job is not there for you
    assert elsewhere.status_code == 404
    assert spoofed.status_code == 404  # the default key, whatever the header says


async def test_get_job_validates_the_id(api: Api) -> None:
    assert (await api.client.get("/v1/jobs/a*b")).status_code == 404
    missing = await api.client.get(f"/v1/jobs/{job_id_for('acme', 'none')}")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "not_found"


async def test_list_shows_one_tenants_jobs_newest_first(api: Api) -> None:
    for key in ("b", "a", "c"):
        await api.post(key=key, **ACME)
    await api.post(key="other", **bearer("globex"))
    await api.post(key="mine")  # the default tenant
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for i, key in enumerate(("c", "a", "b")):  # accepted in this order
        record = await api.jobs.get("acme", job_id_for("acme", key))
        assert record is not None
        api.jobs.put(record.model_copy(update={"history": {"accepted": t0 + timedelta(i)}}))

    listed = await api.client.get("/v1/jobs", headers=ACME)
    default = await api.client.get("/v1/jobs")
    spoofed = await api.client.get("/v1/jobs", headers={"X-Clipline-Tenant": "acme"})

    assert listed.json()["tenant"] == "acme"
    assert [j["job_id"] for j in listed.json()["data"]] == [
        job_id_for("acme", k)
        for k in ("b", "a", "c")  # newest first
    ]
    assert listed.json()["next_cursor"] is None
    assert [j["job_id"] for j in default.json()["data"]] == [job_id_for("default", "mine")]
    assert spoofed.json() == default.json()


async def test_store_outage_is_a_503_and_a_retry_takes_the_job() -> None:
    jobs = FlakyJobStore(ConnectionError("kv unreachable"))
    async with serving(jobs) as api:
        down = await api.post(key="k7")
        up = await api.post(key="k7")

    assert down.status_code == 503
    assert down.json()["reason"] == "unavailable"
    assert up.status_code == 202
    assert up.json()["job_id"] == job_id_for("default", "k7")


async def test_nats_outage_is_a_503_not_a_lost_job(api: Api) -> None:
    api.emitted.down = True
    down = await api.post(key="k8")
    api.emitted.down = False
    retried = await api.post(key="k8")

    assert down.status_code == 503
    assert down.json()["reason"] == "unavailable"
    # the record was written before NATS failed: the retry finds it and announces it now
    assert retried.status_code == 200
    assert retried.json() == {
        "job_id": job_id_for("default", "k8"),
        "tenant": "default",
        "status": "accepted",
    }
    [event] = accepted(api)
    assert event.event_id == fact_event_id(job_id_for("default", "k8"), "accepted")


async def test_a_keyless_request_is_given_a_key_a_503_names_for_the_retry(api: Api) -> None:
    api.emitted.down = True
    down = await api.post()
    api.emitted.down = False
    key = down.headers["Idempotency-Key"]
    retried = await api.post(key=key)

    assert down.status_code == 503
    assert key.startswith("http:")
    assert retried.status_code == 200  # recorded before NATS failed: the same job, announced now
    assert retried.json()["job_id"] == job_id_for("default", key)
    [event] = accepted(api)
    assert event.job_id == job_id_for("default", key)


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Authorization": ""}, "header is needed"),
        ({"Authorization": "Token abc"}, "must be 'Bearer"),
        ({"Authorization": "Bearer ck_short"}, "malformed"),
        ({"Authorization": f"Bearer ck_{'0' * 16}_{'a' * 43}"}, "not known"),
    ],
)
async def test_every_endpoint_needs_a_valid_key(
    api: Api, headers: dict[str, str], says: str
) -> None:
    job_id = job_id_for("default", "k9")
    for method, path in [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
    ]:
        r = await api.client.request(method, path, json=BODY, headers=headers)
        assert r.status_code == 401, (method, path)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["reason"] == "unauthorized"
        assert says in r.json()["detail"]
    assert api.jobs.records() == {}
    assert api.emitted.events == []


async def test_a_revoked_key_is_refused_from_the_next_request_on(api: Api) -> None:
    assert (await api.client.get("/v1/jobs", headers=ACME)).status_code == 200
    await api.keys.revoke_tenant("acme", datetime.now(UTC))
    refused = await api.client.get("/v1/jobs", headers=ACME)

    assert refused.status_code == 401
    assert refused.json()["detail"] == "the API key was revoked"


async def test_last_use_is_noted_once_for_a_burst_of_requests(api: Api) -> None:
    for _ in range(5):
        assert (await api.client.get("/v1/jobs", headers=ACME)).status_code == 200
    [acme] = await api.keys.list("acme")

    assert acme.last_used_at is not None
    assert api.keys.touches == 1


class DownKeys(InMemoryApiKeys):
    async def get(self, key_id: str) -> None:
        raise ConnectionError("kv unreachable")


async def test_a_key_store_outage_is_a_503_not_a_401() -> None:
    async with serving(InMemoryJobStore(), DownKeys(TENANTS)) as api:
        r = await api.post(key="k10")

    assert r.status_code == 503
    assert r.json()["reason"] == "unavailable"
    assert api.jobs.records() == {}

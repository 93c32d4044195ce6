"""GET /v1/jobs over intake's HTTP API: filters, newest first, cursor pages followed to the
end, bad values a 422 problem naming the parameter, another tenant's jobs never listed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts import JobStatus
from tests.component.harness import job_record, new_job_id
from tests.component.test_intake_http import ACME, Api, serving
from tests.component.test_intake_problems import assert_problem
from tests.fakes import InMemoryJobStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)
STATES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.GENERATING)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    """acme has 9 jobs, one a minute, their states in turn; globex has one."""
    jobs = InMemoryJobStore()
    for n in range(9):
        record = job_record(new_job_id(), STATES[n % 3])
        accepted = {"accepted": T0 + timedelta(minutes=n)}
        model = "sora-2-pro" if n % 2 else "sora-2"
        spec = record.spec.model_copy(update={"model": model})
        jobs.put(record.model_copy(update={"tenant": "acme", "history": accepted, "spec": spec}))
    jobs.put(job_record(new_job_id(), JobStatus.COMPLETED).model_copy(update={"tenant": "globex"}))
    async with serving(jobs) as served:
        yield served


async def listed(api: Api, **params: Any) -> list[dict[str, Any]]:
    """Every page of the query, following next_cursor to the end."""
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get("/v1/jobs", params=query, headers=ACME)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tenant"] == "acme"
        assert len(body["data"]) <= int(params.get("limit", 20))
        found += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("the pages never ended")


def accepted_at(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["history"]["accepted"])


async def test_pages_follow_the_cursor_newest_first(api: Api) -> None:
    everything = await listed(api)
    paged = await listed(api, limit=2)

    assert len(everything) == 9
    assert [j["job_id"] for j in paged] == [j["job_id"] for j in everything]
    times = [accepted_at(j) for j in paged]
    assert times == sorted(times, reverse=True)
    assert {j["tenant"] for j in paged} == {"acme"}


async def test_a_job_accepted_while_paging_shifts_nothing(api: Api) -> None:
    first = await api.client.get("/v1/jobs", params={"limit": 4}, headers=ACME)
    await api.post(key="late", **ACME)  # newest of all: before the cursor
    rest = await listed(api, limit=4, cursor=first.json()["next_cursor"])

    ids = [j["job_id"] for j in first.json()["data"] + rest]
    assert len(ids) == len(set(ids)) == 9


async def test_filters(api: Api) -> None:
    done = await listed(api, status="completed,failed", limit=2)
    repeated = await listed(api, status=["completed", "failed"])
    pro = await listed(api, model="sora-2-pro", kind="generate")
    window = await listed(
        api, created_after=(T0 + timedelta(minutes=2)).isoformat(),
        created_before="2026-12-01T00:05:00Z",
    )  # fmt: skip

    assert {j["status"] for j in done} == {"completed", "failed"}
    assert len(done) == 6
    assert [j["job_id"] for j in repeated] == [j["job_id"] for j in done]
    assert {j["spec"]["model"] for j in pro} == {"sora-2-pro"}
    assert len(pro) == 4
    assert [accepted_at(j) for j in window] == [T0 + timedelta(minutes=m) for m in (4, 3, 2)]
    assert await listed(api, kind="remix") == []  # a kind to come: accepted, nothing yet


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "done"}, "status"),
        ({"kind": "upscale"}, "kind"),
        ({"created_after": "2026-12-01T00:00:00"}, "created_after"),
        ({"created_before": "tomorrow"}, "created_before"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "bogus"}, "cursor"),
    ],
)
async def test_bad_values_are_a_422_problem_naming_the_parameter(
    api: Api, params: dict[str, str], field: str
) -> None:
    r = await api.client.get("/v1/jobs", params=params, headers=ACME)

    assert assert_problem(r, 422, "invalid_request")["field"] == field


async def test_a_bad_query_without_a_key_is_a_401(api: Api) -> None:
    r = await api.client.get("/v1/jobs", params={"limit": "0"}, headers={"Authorization": ""})

    assert_problem(r, 401, "unauthorized")


async def test_a_store_outage_is_a_503_problem() -> None:
    class Down(InMemoryJobStore):
        async def list(self, tenant: str) -> list[Any]:
            raise ConnectionError("kv unreachable")

    async with serving(Down()) as api:
        r = await api.client.get("/v1/jobs", headers=ACME)

    assert_problem(r, 503, "unavailable")


QUERY_VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(-(10**20), 10**20).map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["completed", "generate", "2026-12-01T00:00:00Z", "", ",", "%00", "1e3"]),
)
PARAMS = ("status", "kind", "model", "created_after", "created_before", "limit", "cursor")


@given(st.dictionaries(st.sampled_from(PARAMS), st.lists(QUERY_VALUES, min_size=1, max_size=3)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_query_is_a_page_or_a_422_problem_never_a_5xx(params: dict[str, list[str]]) -> None:
    async def ask() -> httpx.Response:
        async with serving(InMemoryJobStore()) as served:
            return await served.client.get("/v1/jobs", params=params, headers=ACME)

    r = asyncio.run(ask())

    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["field"] in PARAMS
    else:
        assert set(r.json()) == {"data", "next_cursor", "tenant"}

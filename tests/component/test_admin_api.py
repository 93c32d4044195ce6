"""pricing_guard's admin API (/v1/admin/) over ASGI with in-memory budgets and keys: the bearer
token, budgets in and out in exact dollars, clear refusals of bad input, spend, disputes, API
keys, and hostile bodies answered 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.admin import build_admin
from services.pricing_guard.budgets import Dispute
from services.pricing_guard.ports import Claim, Reserved
from shared.apikeys import authenticate, digest
from tests.fakes import InMemoryApiKeys
from tests.security.hostile import ADMIN_WRITES, LIMIT, MALFORMED, chunks

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def keys() -> InMemoryApiKeys:
    return InMemoryApiKeys()


@pytest.fixture
async def admin(budgets: KvBudgets, keys: InMemoryApiKeys) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_admin(budgets, TOKEN, keys=keys))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_requests_without_the_token_are_refused(
    admin: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, path in [
        ("GET", "/v1/admin/budgets"),
        ("GET", "/v1/admin/spend"),
        ("PUT", "/v1/admin/budgets/global/daily"),
    ]:
        response = await admin.request(method, path, headers=headers, json={"limit_usd": "1"})
        assert response.status_code == 401
        assert response.json()["error"]["reason"] == "unauthorized"
        assert TOKEN not in response.text


async def test_without_a_configured_token_the_api_is_disabled(budgets: KvBudgets) -> None:
    transport = httpx.ASGITransport(app=build_admin(budgets, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        response = await client.get("/v1/admin/budgets", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"]["reason"] == "admin_disabled"


async def test_a_budget_set_is_shown_with_this_windows_usage(admin: httpx.AsyncClient) -> None:
    put = await admin.put(
        "/v1/admin/budgets/tenant:acme/daily",
        headers=AUTH,
        json={"limit_usd": "12.5", "soft_usd": "$10"},
    )
    assert put.status_code == 200, put.text
    view = put.json()
    assert view["limit"] == {"micros": 12_500_000, "usd": "$12.50"}
    assert view["soft"]["micros"] == 10_000_000
    assert view["window"] == datetime.now(UTC).strftime("%Y-%m-%d")
    assert view["left"]["micros"] == 12_500_000

    shown = (await admin.get("/v1/admin/budgets", headers=AUTH)).json()["budgets"]
    assert [(b["scope"], b["period"], b["limit"]["micros"]) for b in shown] == [
        ("tenant:acme", "daily", 12_500_000)
    ]
    deleted = await admin.delete("/v1/admin/budgets/tenant:acme/daily", headers=AUTH)
    assert deleted.status_code == 204
    assert (await admin.get("/v1/admin/budgets", headers=AUTH)).json()["budgets"] == []


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/v1/admin/budgets/team:x/daily", {"limit_usd": "1"}, "scope"),
        ("/v1/admin/budgets/global/weekly", {"limit_usd": "1"}, "period"),
        ("/v1/admin/budgets/global/daily", {"limit_usd": "0.0000001"}, "micro-dollar"),
        ("/v1/admin/budgets/global/daily", {"limit_usd": "-5"}, ">= 0"),
        ("/v1/admin/budgets/global/daily", {"limit_usd": "1", "soft_usd": "2"}, "soft"),
        ("/v1/admin/budgets/global/daily", {}, "limit_usd"),
        ("/v1/admin/budgets/global/daily", ["x"], "JSON object"),
    ],
)
async def test_bad_budgets_are_refused_with_a_reason(
    admin: httpx.AsyncClient, path: str, body: object, says: str
) -> None:
    response = await admin.put(path, headers=AUTH, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["reason"] == "invalid_budget"
    assert says in error["detail"]


async def test_a_body_that_is_not_json_is_refused(admin: httpx.AsyncClient) -> None:
    response = await admin.put("/v1/admin/budgets/global/daily", headers=AUTH, content=b"{nope")
    assert response.status_code == 422


async def test_spend_and_disputes_and_their_resolution(
    admin: httpx.AsyncClient, budgets: KvBudgets
) -> None:
    now = datetime.now(UTC)
    claim = Claim("acme", "job_" + "a" * 32, "sora-2", "1280x720", 4, 400_000, now)
    assert isinstance(await budgets.reserve(claim), Reserved)
    await budgets.settle("acme", claim.job_id, lambda _: Dispute("unknown"), "timed_out", now)

    disputes = (await admin.get("/v1/admin/disputes", headers=AUTH)).json()["disputes"]
    assert [(d["job_id"], d["estimate"]["micros"]) for d in disputes] == [(claim.job_id, 400_000)]
    bad = await admin.post(
        f"/v1/admin/disputes/acme/{claim.job_id}", headers=AUTH, json={"resolution": "maybe"}
    )
    assert bad.status_code == 422
    ok = await admin.post(
        f"/v1/admin/disputes/acme/{claim.job_id}",
        headers=AUTH,
        json={"resolution": "charged", "amount_usd": "0.40"},
    )
    assert ok.json() == {"job_id": claim.job_id, "state": "charged"}
    again = await admin.post(
        f"/v1/admin/disputes/acme/{claim.job_id}", headers=AUTH, json={"resolution": "released"}
    )
    assert again.status_code == 409
    missing = await admin.post(
        f"/v1/admin/disputes/acme/job_{'b' * 32}", headers=AUTH, json={"resolution": "released"}
    )
    assert missing.status_code == 404
    malformed = await admin.post(
        "/v1/admin/disputes/acme/job.x", headers=AUTH, json={"resolution": "released"}
    )
    assert malformed.status_code == 422

    spend = (await admin.get("/v1/admin/spend", headers=AUTH, params={"by": "model"})).json()
    assert spend["total"] == {"micros": 400_000, "usd": "$0.40"}
    assert spend["rows"] == [
        {
            "model": "sora-2",
            "jobs": 1,
            "charged_jobs": 1,
            "released_jobs": 0,
            "seconds": 4,
            "amount_micros": 400_000,
            "amount": {"micros": 400_000, "usd": "$0.40"},
        }
    ]
    assert spend["lifetime"]["balanced"]
    assert (await admin.get("/v1/admin/spend", headers=AUTH, params={"by": "x"})).status_code == 422
    other = await admin.get("/v1/admin/spend", headers=AUTH, params={"tenant": "zeta"})
    assert other.json()["jobs"] == 0


async def test_a_key_is_shown_once_stored_hashed_listed_and_revoked(
    admin: httpx.AsyncClient, keys: InMemoryApiKeys
) -> None:
    made = await admin.post("/v1/admin/keys", headers=AUTH, json={"tenant": "acme", "name": "ci"})
    assert made.status_code == 201, made.text
    issued = made.json()
    assert issued.keys() >= {"id", "tenant", "name", "key", "created_at"}
    assert (issued["tenant"], issued["name"]) == ("acme", "ci")
    assert issued["key"].startswith(f"ck_{issued['id']}_")
    secret = issued["key"].split("_", 2)[2]
    assert keys.records[issued["id"]].secret_sha256 == digest(secret)  # hashed, not kept
    assert secret not in keys.records[issued["id"]].model_dump_json()
    other = await admin.post("/v1/admin/keys", headers=AUTH, json={"tenant": "globex"})
    assert other.json()["name"] == "unnamed"

    every = (await admin.get("/v1/admin/keys", headers=AUTH)).json()["keys"]
    acme = (await admin.get("/v1/admin/keys", headers=AUTH, params={"tenant": "acme"})).json()
    assert [k["tenant"] for k in every] == ["acme", "globex"]
    assert [k["id"] for k in acme["keys"]] == [issued["id"]]
    listing = str(every)
    assert secret not in listing
    assert digest(secret) not in listing
    assert "key" not in every[0]
    assert "secret_sha256" not in every[0]

    revoked = await admin.delete(f"/v1/admin/keys/{issued['id']}", headers=AUTH)
    again = await admin.delete(f"/v1/admin/keys/{issued['id']}", headers=AUTH)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # revoked once
    denied = await authenticate(keys, f"Bearer {issued['key']}", datetime.now(UTC))
    assert getattr(denied, "detail", "") == "the API key was revoked"


async def test_revoking_a_tenant_revokes_all_its_keys_only(
    admin: httpx.AsyncClient, keys: InMemoryApiKeys
) -> None:
    for tenant in ("acme", "acme", "globex"):
        await admin.post("/v1/admin/keys", headers=AUTH, json={"tenant": tenant})
    gone = await admin.delete("/v1/admin/keys", headers=AUTH, params={"tenant": "acme"})

    assert gone.status_code == 200
    assert len(gone.json()["revoked"]) == 2
    left = {r.tenant for r in keys.records.values() if r.revoked_at is None}
    assert left == {"globex"}


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("POST", "/v1/admin/keys", None, {"tenant": "Not A Tenant"}),
        ("POST", "/v1/admin/keys", None, {"tenant": "acme", "name": ""}),
        ("POST", "/v1/admin/keys", None, {"tenant": "acme", "name": "x" * 101}),
        ("POST", "/v1/admin/keys", None, {"name": "no tenant"}),
        ("GET", "/v1/admin/keys", {"tenant": "A!"}, None),
        ("DELETE", "/v1/admin/keys", {"tenant": "A!"}, None),
    ],
)
async def test_bad_key_requests_are_refused_with_a_reason(
    admin: httpx.AsyncClient,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: object,
) -> None:
    r = await admin.request(method, path, headers=AUTH, params=params, json=body)
    assert r.status_code == 422
    assert r.json()["error"]["reason"] in ("invalid_key", "invalid_request")


async def test_revoking_an_unknown_or_malformed_key_id_is_a_404(admin: httpx.AsyncClient) -> None:
    for key_id in ("0123456789abcdef", "not-an-id", "..%2F..%2Fx"):
        r = await admin.delete(f"/v1/admin/keys/{key_id}", headers=AUTH)
        assert r.status_code == 404
        assert r.json()["error"]["reason"] == "not_found"


async def test_the_keys_api_needs_the_admin_token(admin: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys")]:
        r = await admin.request(method, path, json={"tenant": "acme"})
        assert r.status_code == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_WRITES)
@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_hostile_bodies_are_a_4xx_with_a_reason(
    admin: httpx.AsyncClient, keys: InMemoryApiKeys, method: str, path: str, case: str
) -> None:
    raw, status = MALFORMED[case]
    r = await admin.request(method, path, headers=AUTH, content=raw)

    assert r.status_code == status, r.text
    assert r.json()["error"]["reason"]
    assert r.json()["error"]["detail"]
    assert keys.records == {}


@pytest.mark.parametrize(("method", "path"), ADMIN_WRITES)
async def test_a_streamed_body_past_the_limit_is_a_413(
    admin: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await admin.request(method, path, headers=AUTH, content=chunks(LIMIT + 1))
    assert r.status_code == 413
    assert r.json()["error"]["reason"] == "too_large"

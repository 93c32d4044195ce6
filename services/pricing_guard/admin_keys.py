"""The admin API's /v1/admin/keys: intake's API keys issued, listed and revoked."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from services.pricing_guard.admin_http import error, json_object
from shared.apikeys import KEY_ID_RE, ApiKeyInputError, ApiKeys
from shared.contracts.ids import is_valid_tenant

DEFAULT_KEY_NAME = "unnamed"


def add_key_routes(api: FastAPI, keys: ApiKeys) -> None:
    """/v1/admin/keys: issue (the key is in this one answer), list (never a key or its hash),
    revoke one, or revoke every key of a tenant."""

    @api.post("/v1/admin/keys", status_code=201)
    async def create_key(request: Request) -> JSONResponse:
        body = await json_object(request, "invalid_key")
        tenant, name = body.get("tenant"), body.get("name", DEFAULT_KEY_NAME)
        if not isinstance(tenant, str) or not isinstance(name, str):
            return error(422, "invalid_key", "tenant (and name, if given) must be strings")
        try:
            issued = await keys.create(tenant, name, datetime.now(UTC))
        except ApiKeyInputError as exc:
            return error(422, "invalid_key", str(exc))
        view = issued.record.view()
        return JSONResponse({**view, "key": issued.key}, status_code=201)

    @api.get("/v1/admin/keys")
    async def list_keys(tenant: str | None = Query(default=None)) -> JSONResponse:
        if tenant is not None and not is_valid_tenant(tenant):
            return error(422, "invalid_request", f"not a tenant name: {tenant!r}")
        return JSONResponse({"keys": [r.view() for r in await keys.list(tenant)]})

    @api.delete("/v1/admin/keys/{key_id}")
    async def revoke_key(key_id: str) -> JSONResponse:
        record = (
            await keys.revoke(key_id, datetime.now(UTC)) if KEY_ID_RE.fullmatch(key_id) else None
        )
        if record is None:
            return error(404, "not_found", f"no API key {key_id!r}")
        return JSONResponse(record.view())

    @api.delete("/v1/admin/keys")
    async def revoke_tenant_keys(tenant: str = Query()) -> JSONResponse:
        if not is_valid_tenant(tenant):
            return error(422, "invalid_request", f"not a tenant name: {tenant!r}")
        revoked = await keys.revoke_tenant(tenant, datetime.now(UTC))
        return JSONResponse({"tenant": tenant, "revoked": [r.view() for r in revoked]})

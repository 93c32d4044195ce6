"""pricing_guard's admin HTTP API under /v1/admin/: budgets, spend, disputes and intake's API
keys, behind a bearer token (CLIPLINE_ADMIN_TOKEN). `clipline budget`, `clipline spend` and
`clipline keys` drive it. Bodies are JSON objects of at most MAX_BODY_BYTES; every body it
cannot take is answered 4xx with a reason, never a 500."""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from services.pricing_guard.admin_http import (
    MAX_BODY_BYTES,
    add_error_handlers,
    json_body,
    json_object,
)
from services.pricing_guard.admin_http import error as _error
from services.pricing_guard.admin_keys import add_key_routes
from services.pricing_guard.budgets import (
    GLOBAL,
    BudgetInputError,
    Charge,
    Limit,
    Release,
    Slot,
    Usage,
    parse_period,
    parse_scope,
    parse_usd,
    usd,
    window,
)
from services.pricing_guard.observe import count_settled
from services.pricing_guard.ports import BudgetStore
from services.pricing_guard.records import LimitRecord, ReservationRecord, SpendEntry
from services.pricing_guard.usecases import write_charge
from shared.apikeys import ApiKeys
from shared.contracts.ids import JOB_ID_RE, is_valid_tenant
from shared.jobstore import JobStore

By = Literal["tenant", "model", "day"]
MAX_AMOUNT_MICROS = 10**15
"""A billion dollars: a larger amount is a typo, and an exponent like 1e999999999 would take
`int()` hours to build."""
MAX_AMOUNT_USD = Decimal(MAX_AMOUNT_MICROS).scaleb(-6)


def _money(micros: int | None) -> dict[str, Any]:
    return {"micros": micros, "usd": usd(micros) if micros is not None else None}


def usage_view(usage: Usage, limit: Limit | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "used": _money(usage.used),
        "admitted": _money(usage.admitted),
        "reserved": _money(usage.reserved),
        "settled": _money(usage.settled),
        "released": _money(usage.released),
        "disputed": _money(usage.disputed),
        "jobs": usage.jobs,
        "balanced": usage.balanced,
    }
    if limit is not None:
        view["left"] = _money(max(0, limit.limit_micros - usage.used))
    return view


def budget_view(record: LimitRecord, current: str, usage: Usage) -> dict[str, Any]:
    return {
        "scope": record.scope,
        "period": record.period,
        "window": current,
        "limit": _money(record.limit_micros),
        "soft": _money(record.soft_micros),
        "updated_at": record.updated_at.isoformat(),
        **usage_view(usage, record.limit),
    }


def summarise(entries: Iterable[SpendEntry], by: By) -> list[dict[str, Any]]:
    """Ledger totals per tenant, model or day (the UTC day each job was admitted)."""
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for e in entries:
        key = {"tenant": e.tenant, "model": e.model, "day": e.day}[by]
        row = rows[key]
        row["jobs"] += 1
        row["charged_jobs"] += e.settlement == "charged"
        row["released_jobs"] += e.settlement == "released"
        row["seconds"] += e.seconds if e.settlement == "charged" else 0
        row["amount_micros"] += e.amount_micros
    return [
        {by: key, **row, "amount": _money(row["amount_micros"])}
        for key, row in sorted(rows.items())
    ]


def dispute_view(record: ReservationRecord) -> dict[str, Any]:
    return {
        "tenant": record.tenant,
        "job_id": record.job_id,
        "model": record.model,
        "size": record.size,
        "seconds": record.seconds,
        "estimate": _money(record.estimate_micros),
        "why": record.why,
        "since": (record.settled_at or record.reserved_at).isoformat(),
    }


def build_admin(
    budgets: BudgetStore,
    token: str | None,
    jobs: JobStore | None = None,
    keys: ApiKeys | None = None,
) -> FastAPI:
    api = FastAPI(title="clipline admin", openapi_url="/v1/admin/openapi.json", docs_url=None)

    add_error_handlers(api)

    @api.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if token is None:
            return _error(503, "admin_disabled", "set CLIPLINE_ADMIN_TOKEN to use the admin API")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
            return _error(401, "unauthorized", "a valid 'Authorization: Bearer <token>' is needed")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # whatever the endpoint
            return _error(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        response: Response = await call_next(request)
        return response

    @api.get("/v1/admin/budgets")
    async def list_budgets() -> JSONResponse:
        now = datetime.now(UTC)
        views = []
        for record in sorted(await budgets.limits(), key=lambda r: (r.scope, r.period)):
            current = window(record.period, now)
            usage = await budgets.usage(Slot(record.scope, record.period, current))
            views.append(budget_view(record, current, usage))
        return JSONResponse({"budgets": views})

    @api.put("/v1/admin/budgets/{scope}/{period}")
    async def set_budget(scope: str, period: str, request: Request) -> JSONResponse:
        body = await json_object(request, "invalid_budget")
        try:
            the_scope, the_period = parse_scope(scope), parse_period(period)
            limit = Limit(_amount(body, "limit"), _optional_amount(body, "soft"))
        except BudgetInputError as exc:
            return _error(422, "invalid_budget", str(exc))
        now = datetime.now(UTC)
        await budgets.set_limit(the_scope, the_period, limit, now)
        current = window(the_period, now)
        usage = await budgets.usage(Slot(the_scope, the_period, current))
        record = LimitRecord(
            scope=the_scope, period=the_period, limit_micros=limit.limit_micros,
            soft_micros=limit.soft_micros, updated_at=now,
        )  # fmt: skip
        return JSONResponse(budget_view(record, current, usage))

    @api.delete("/v1/admin/budgets/{scope}/{period}")
    async def delete_budget(scope: str, period: str) -> Response:
        try:
            the_scope, the_period = parse_scope(scope), parse_period(period)
        except BudgetInputError as exc:
            return _error(422, "invalid_budget", str(exc))
        await budgets.set_limit(the_scope, the_period, None, datetime.now(UTC))
        return Response(status_code=204)

    @api.get("/v1/admin/spend")
    async def spend(
        tenant: str | None = Query(default=None), by: str = Query(default="tenant")
    ) -> JSONResponse:
        if tenant is not None and not is_valid_tenant(tenant):
            return _error(422, "invalid_request", f"not a tenant name: {tenant!r}")
        if by not in ("tenant", "model", "day"):
            return _error(422, "invalid_request", "by must be tenant, model or day")
        entries = await budgets.spend(tenant)
        scope = f"tenant:{tenant}" if tenant else GLOBAL
        lifetime = await budgets.usage(Slot(scope, "lifetime", "lifetime"))
        total = sum(e.amount_micros for e in entries)
        return JSONResponse(
            {
                "scope": scope,
                "by": by,
                "rows": summarise(entries, by),  # type: ignore[arg-type]
                "total": _money(total),
                "jobs": len(entries),
                "lifetime": usage_view(lifetime),
            }
        )

    @api.get("/v1/admin/disputes")
    async def disputes() -> JSONResponse:
        return JSONResponse({"disputes": [dispute_view(r) for r in await budgets.disputes()]})

    @api.post("/v1/admin/disputes/{tenant}/{job_id}")
    async def resolve(tenant: str, job_id: str, request: Request) -> JSONResponse:
        if not is_valid_tenant(tenant) or not JOB_ID_RE.fullmatch(job_id):
            return _error(422, "invalid_request", f"not a tenant and job id: {tenant}/{job_id}")
        body = await json_body(request, "invalid_resolution")
        try:
            decision = _resolution(body)
        except BudgetInputError as exc:
            return _error(422, "invalid_resolution", str(exc))
        return await resolve_dispute(budgets, jobs, tenant, job_id, decision)

    if keys is not None:
        add_key_routes(api, keys)
    return api


async def resolve_dispute(
    budgets: BudgetStore, jobs: JobStore | None, tenant: str, job_id: str,
    decision: Charge | Release,
) -> JSONResponse:  # fmt: skip
    """Settle a disputed job as the admin says, then write its charge on the job record."""
    settled = await budgets.resolve(tenant, job_id, decision, datetime.now(UTC))
    if settled is None:
        return _error(404, "not_found", f"no reservation for {tenant}/{job_id}")
    if not settled.fresh:
        state = settled.reservation.state
        return _error(409, "not_disputed", f"{job_id} is {state}, not disputed")
    count_settled(settled.reservation)
    charged = settled.reservation.charged_micros
    if jobs is not None and charged is not None:
        await write_charge(jobs, settled.reservation, charged)
    return JSONResponse({"job_id": job_id, "state": settled.reservation.state})


def _amount(body: dict[str, Any], name: str) -> int:
    value = body.get(f"{name}_usd")
    if value is not None:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise BudgetInputError(f'{name}_usd must be a string of dollars, e.g. "12.50"')
        return parse_usd(_bounded(str(value), f"{name}_usd"))
    micros = body.get(f"{name}_micros")
    if isinstance(micros, int) and not isinstance(micros, bool) and micros >= 0:
        if micros > MAX_AMOUNT_MICROS:
            raise BudgetInputError(f"{name}_micros exceeds {MAX_AMOUNT_MICROS}")
        return micros
    raise BudgetInputError(f"{name}_usd (a string of dollars) or {name}_micros is required")


def _bounded(text: str, field: str) -> str:
    """`text` when its amount is at most MAX_AMOUNT_MICROS (parse_usd says what else is wrong)."""
    if len(text) > 64:
        raise BudgetInputError(f"{field} is not an amount of dollars (too long)")
    try:
        amount = Decimal(text.strip().removeprefix("$").replace("_", ""))
    except InvalidOperation:
        return text
    if amount.is_finite() and amount.copy_abs() > MAX_AMOUNT_USD:  # no context: no Overflow
        raise BudgetInputError(f"{field} exceeds {MAX_AMOUNT_MICROS // 1_000_000} dollars")
    return text


def _optional_amount(body: dict[str, Any], name: str) -> int | None:
    if body.get(f"{name}_usd") is None and body.get(f"{name}_micros") is None:
        return None
    return _amount(body, name)


def _resolution(body: Any) -> Charge | Release:
    if not isinstance(body, dict):
        raise BudgetInputError("the body must be a JSON object")
    match body.get("resolution"):
        case "released":
            return Release("resolved by an admin: not billed")
        case "charged":
            return Charge(_amount(body, "amount"), "resolved by an admin: billed")
        case other:
            raise BudgetInputError(f"resolution must be 'charged' or 'released', got {other!r}")

"""`clipline budget ...` and `clipline spend`: the admin API of pricing_guard, from a terminal.

The API is CLIPLINE_ADMIN_URL with the token CLIPLINE_ADMIN_TOKEN (any deployment), else the
embedded stack's first healthy pricing_guard with the token `clipline up` keeps for it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from clipline.stack import admin_endpoint


class AdminError(SystemExit):
    """The admin API refused a request or cannot be reached: one clear line, exit status 1."""


def endpoint(home: Path) -> tuple[str, str]:
    url = os.environ.get("CLIPLINE_ADMIN_URL")
    token = os.environ.get("CLIPLINE_ADMIN_TOKEN")
    if url:
        if not token:
            raise AdminError("CLIPLINE_ADMIN_URL is set: set CLIPLINE_ADMIN_TOKEN too")
        return url.rstrip("/"), token
    # The embedded stack's services run with the token kept in its state, whatever the
    # calling shell exports.
    return admin_endpoint(home)


def call(
    home: Path,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> Any:
    url, token = endpoint(home)
    try:
        response = httpx.request(
            method,
            url + path,
            json=body,
            params=params,
            timeout=30.0,
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError as exc:
        raise AdminError(f"admin API at {url} unreachable: {exc}") from None
    if response.status_code == 204:
        return None
    try:
        payload = response.json()
    except ValueError:
        raise AdminError(
            f"admin API answered {response.status_code}: {response.text[:200]}"
        ) from None
    if response.is_error:
        error = payload.get("error", {}) if isinstance(payload, dict) else {}
        reason = error.get("reason", response.status_code)
        raise AdminError(f"{reason}: {error.get('detail', response.text[:200])}")
    return payload


def usd(view: dict[str, Any] | None) -> str:
    return "-" if not view or view.get("usd") is None else str(view["usd"])


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _set(args: argparse.Namespace) -> int:
    body = {"limit_usd": args.limit}
    if args.soft is not None:
        body["soft_usd"] = args.soft
    view = call(args.home, "PUT", _budget_path(args), body)
    print(
        f"{view['scope']} {view['period']} budget: limit {usd(view['limit'])}"
        f"{', soft ' + usd(view['soft']) if view['soft']['micros'] else ''}; "
        f"{view['window']}: used {usd(view['used'])}, left {usd(view.get('left'))}"
    )
    return 0


def _delete(args: argparse.Namespace) -> int:
    call(args.home, "DELETE", _budget_path(args))
    print(f"{args.scope} {args.period} budget removed")
    return 0


def _budget_path(args: argparse.Namespace) -> str:
    return f"/v1/admin/budgets/{quote(args.scope, safe=':')}/{quote(args.period)}"


def _show(args: argparse.Namespace) -> int:
    payload = call(args.home, "GET", "/v1/admin/budgets")
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    budgets = payload["budgets"]
    if not budgets:
        print("no budgets set (clipline budget set --scope global --period daily --limit 50)")
        return 0
    rows = [
        [
            b["scope"],
            b["period"],
            b["window"],
            usd(b["limit"]),
            usd(b["soft"]),
            usd(b["used"]),
            usd(b.get("left")),
            usd(b["reserved"]),
            usd(b["settled"]),
            usd(b["disputed"]),
            str(b["jobs"]),
        ]
        for b in budgets
    ]
    print(
        table(
            [
                "SCOPE",
                "PERIOD",
                "WINDOW",
                "LIMIT",
                "SOFT",
                "USED",
                "LEFT",
                "RESERVED",
                "CHARGED",
                "DISPUTED",
                "JOBS",
            ],
            rows,
        )
    )
    return 0


def _disputes(args: argparse.Namespace) -> int:
    payload = call(args.home, "GET", "/v1/admin/disputes")
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    rows = [
        [
            d["tenant"],
            d["job_id"],
            d["model"],
            d["size"],
            str(d["seconds"]),
            usd(d["estimate"]),
            d["since"],
            d["why"] or "",
        ]
        for d in payload["disputes"]
    ]
    if not rows:
        print("no disputed jobs")
        return 0
    print(table(["TENANT", "JOB", "MODEL", "SIZE", "SECONDS", "ESTIMATE", "SINCE", "WHY"], rows))
    return 0


def _resolve(args: argparse.Namespace) -> int:
    if args.released:
        body: dict[str, Any] = {"resolution": "released"}
    else:
        body = {"resolution": "charged", "amount_usd": args.charged}
    path = f"/v1/admin/disputes/{quote(args.tenant)}/{quote(args.job_id)}"
    result = call(args.home, "POST", path, body)
    print(f"{result['job_id']}: {result['state']}")
    return 0


def _spend(args: argparse.Namespace) -> int:
    params = {"by": args.by, **({"tenant": args.tenant} if args.tenant else {})}
    payload = call(args.home, "GET", "/v1/admin/spend", params=params)
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    rows = [
        [
            str(r[args.by]),
            str(r["jobs"]),
            str(r["charged_jobs"]),
            str(r["released_jobs"]),
            str(r["seconds"]),
            usd(r["amount"]),
        ]
        for r in payload["rows"]
    ]
    print(table([args.by.upper(), "JOBS", "CHARGED", "RELEASED", "SECONDS", "AMOUNT"], rows))
    life = payload["lifetime"]
    print(
        f"\ntotal {usd(payload['total'])} over {payload['jobs']} settled jobs "
        f"({payload['scope']}); in flight: reserved {usd(life['reserved'])}, "
        f"disputed {usd(life['disputed'])}"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register `budget` and `spend` on the CLI's subparsers."""
    b = sub.add_parser("budget", help="budgets: set, show, delete; disputed jobs")
    bsub = b.add_subparsers(dest="budget_command", required=True)
    st = bsub.add_parser("set", help="set a hard limit (and a soft threshold)")
    _scope_period(st)
    st.add_argument("--limit", required=True, help="hard limit in dollars, e.g. 50 or 12.50")
    st.add_argument("--soft", help="soft threshold in dollars: a budget_alert when crossed")
    st.set_defaults(func=_set)
    sh = bsub.add_parser("show", help="every budget with this window's usage")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)
    de = bsub.add_parser("delete", help="remove a budget")
    _scope_period(de)
    de.set_defaults(func=_delete)
    di = bsub.add_parser("disputes", help="jobs whose upstream bill is unknown")
    di.add_argument("--json", action="store_true")
    di.set_defaults(func=_disputes)
    rs = bsub.add_parser("resolve", help="settle a disputed job")
    rs.add_argument("job_id")
    rs.add_argument("--tenant", default="default")
    how = rs.add_mutually_exclusive_group(required=True)
    how.add_argument("--charged", metavar="USD", help="the upstream billed this much")
    how.add_argument("--released", action="store_true", help="the upstream billed nothing")
    rs.set_defaults(func=_resolve)
    sp = sub.add_parser("spend", help="what settled jobs cost (spend ledger)")
    sp.add_argument("--tenant")
    sp.add_argument("--by", choices=["tenant", "model", "day"], default="tenant")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=_spend)


def _scope_period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", required=True, help="global or tenant:<tenant>")
    parser.add_argument("--period", required=True, choices=["daily", "monthly", "lifetime"])

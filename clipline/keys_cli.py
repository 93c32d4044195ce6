"""`clipline keys create|list|revoke`: intake's API keys through pricing_guard's admin API (as
`clipline budget` reaches it), and the local stack's key a job command sends to its intake."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from clipline import local_keys
from clipline.budget_cli import call, endpoint, table


def intake_key(home: Path, tenant: str, explicit: str | None) -> str:
    """The key a command sends to intake: `--api-key` / CLIPLINE_API_KEY (its tenant is then
    the key's), else the stack's kept key of `tenant`, made on first use."""
    given = local_keys.chosen(explicit)
    if given:
        return given
    return local_keys.ensure(home, tenant, *endpoint(home))


def _create(args: argparse.Namespace) -> int:
    made = call(args.home, "POST", "/v1/admin/keys", {"tenant": args.tenant, "name": args.name})
    if args.json:
        print(json.dumps(made, indent=2))
        return 0
    print(made["key"])
    print(
        f"key {made['id']} of tenant {made['tenant']} ({made['name']}): shown this once, "
        "keep it secret; send it as 'Authorization: Bearer <key>'"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    params = {"tenant": args.tenant} if args.tenant else None
    payload = call(args.home, "GET", "/v1/admin/keys", params=params)
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    keys: list[dict[str, Any]] = payload["keys"]
    if not keys:
        print("no API keys (clipline keys create --tenant T --name N)")
        return 0
    rows = [
        [k["id"], k["tenant"], k["name"], k["created_at"][:19], (k["last_used_at"] or "-")[:19],
         (k["revoked_at"] or "-")[:19]]
        for k in keys
    ]  # fmt: skip
    print(table(["ID", "TENANT", "NAME", "CREATED", "LAST USED", "REVOKED"], rows))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    gone = call(args.home, "DELETE", f"/v1/admin/keys/{quote(args.key_id, safe='')}")
    print(f"key {gone['id']} of tenant {gone['tenant']} revoked at {gone['revoked_at']}")
    return 0


def add_commands(sub: Any) -> None:
    """Register `keys` on the CLI's subparsers."""
    k = sub.add_parser("keys", help="intake API keys: create, list, revoke")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    cr = ksub.add_parser("create", help="a new key of a tenant (printed once)")
    cr.add_argument("--tenant", required=True)
    cr.add_argument("--name", default="unnamed", help="what the key is for (unnamed)")
    cr.add_argument("--json", action="store_true")
    cr.set_defaults(func=_create)
    ls = ksub.add_parser("list", help="every key (never the key itself)")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    rv = ksub.add_parser("revoke", help="revoke a key: refused from the next request on")
    rv.add_argument("key_id", help="the key's id (`clipline keys list`)")
    rv.set_defaults(func=_revoke)

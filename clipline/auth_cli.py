"""`clipline tenants add|list|remove|revoke`, `clipline nats-creds`, `clipline nats-auth init`
and `clipline nats-provision`: the deployment's NATS identities (clipline.auth) from a shell."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from clipline.auth import ADMIN, AuthDir, AuthError
from clipline.budget_cli import call
from clipline.private import write_private
from clipline.stack import require
from shared.identities import SERVICES
from shared.runtime import provision


def _where(args: argparse.Namespace, *, pushes: bool = True) -> tuple[AuthDir, str]:
    """The identities folder and the NATS URL: given (`--auth-dir`, `--nats-url`, e.g. for
    compose), else the running local stack's. `pushes`: the command changes the server's
    accounts, so it needs the URL."""
    if args.auth_dir is not None:
        if pushes and not args.nats_url:
            raise SystemExit("error: --auth-dir needs --nats-url (where to push account changes)")
        return AuthDir(args.auth_dir), args.nats_url
    state = require(args.home)
    return state.auth, args.nats_url or state.nats_url


def _tenants_add(args: argparse.Namespace) -> int:
    auth, url = _where(args)
    made = asyncio.run(auth.add_tenant(url, args.tenant))
    print(f"tenant {args.tenant} {'added' if made else 'already exists'}")
    print(f"its NATS credentials: clipline nats-creds --tenant {args.tenant} -o FILE")
    return 0


def _tenants_list(args: argparse.Namespace) -> int:
    auth, _ = _where(args, pushes=False)
    tenants = auth.tenants()
    if args.json:
        print(json.dumps([t.__dict__ for t in tenants], indent=2))
        return 0
    if not tenants:
        print("no tenants")
    for t in tenants:
        state = "removed" if t.removed else "active"
        print(f"{t.name:<24} {state:<8} {t.users} creds issued, {t.revoked} revoked")
    return 0


def _tenants_remove(args: argparse.Namespace) -> int:
    """Revoke the tenant's NATS credentials, and (on the local stack) its API keys."""
    auth, url = _where(args)
    if not auth.has_tenant(args.tenant):
        raise AuthError(f"no tenant {args.tenant!r}")
    if args.auth_dir is None:  # the keys first: a failure here leaves the tenant to remove again
        gone = call(args.home, "DELETE", "/v1/admin/keys", params={"tenant": args.tenant})
        print(f"tenant {args.tenant}: {len(gone.get('revoked', []))} API key(s) revoked")
    asyncio.run(auth.remove_tenant(url, args.tenant))
    print(f"tenant {args.tenant} removed: every NATS credential of it is revoked (now)")
    if args.auth_dir is not None:
        print(f"revoke its API keys with the admin API: DELETE /v1/admin/keys?tenant={args.tenant}")
    return 0


def _tenants_revoke(args: argparse.Namespace) -> int:
    auth, url = _where(args)
    count = asyncio.run(auth.revoke_tenant_creds(url, args.tenant, args.user))
    print(f"revoked {count} NATS credential(s) of tenant {args.tenant} (connections closed)")
    return 0


def _tenants_creds(args: argparse.Namespace) -> int:
    auth, _ = _where(args, pushes=False)
    users = auth.tenant_users(args.tenant)
    if args.json:
        print(json.dumps(users, indent=2))
        return 0
    for public, user in users.items():
        issued = dt.datetime.fromtimestamp(user["issued_at"], dt.UTC).isoformat()
        revoked = " (revoked)" if user["revoked"] else ""
        print(f"{public}  {user['name']:<20} issued {issued}{revoked}")
    return 0


def _nats_creds(args: argparse.Namespace) -> int:
    """Write a credentials file: a new tenant user, or the admin/service identity's."""
    auth, _ = (
        (AuthDir(args.auth_dir), "") if args.auth_dir is not None else (require(args.home).auth, "")
    )
    if args.tenant is not None:
        text = auth.tenant_creds(args.tenant, args.name or "")
        what = f"tenant {args.tenant}"
    else:
        name = ADMIN if args.admin else args.service
        text = auth.creds_file(name).read_text()
        what = f"the {name} identity"
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        write_private(args.output, text)
        print(f"wrote {what}'s NATS credentials to {args.output} (mode 0600)", file=sys.stderr)
    return 0


def _nats_auth_init(args: argparse.Namespace) -> int:
    auth = AuthDir(args.dir).init(resolver_dir=args.resolver_dir)
    print(f"NATS identities in {args.dir}; server settings: {auth.server_config}")
    return 0


def _nats_provision(args: argparse.Namespace) -> int:
    auth, url = _where(args)
    replicas = args.replicas
    if replicas is None and args.auth_dir is None:  # the local stack's: 3 on its cluster
        replicas = min(len(require(args.home).nats_nodes()), 3)
    # None (a deployment, no --replicas): each stream keeps its count; a new one is R1.
    asyncio.run(provision(url, auth.creds_file(ADMIN), replicas))
    for tenant in args.tenant or []:
        asyncio.run(auth.add_tenant(url, tenant))
    kept = "their replica counts kept" if replicas is None else f"at {replicas} replica(s)"
    print(
        f"streams and buckets are declared, {kept}"
        + (f"; tenants {args.tenant}" if args.tenant else "")
    )
    return 0


def _targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--auth-dir", type=Path, default=None,
                   help="identities folder (default: the local stack's <home>/auth)")  # fmt: skip
    p.add_argument("--nats-url", default="", help="NATS URL (default: the local stack's)")


def add_commands(sub: Any) -> None:
    """Register the commands on the `clipline` parser's subparsers."""
    t = sub.add_parser("tenants", help="tenants' NATS accounts: add, list, remove, revoke")
    tsub = t.add_subparsers(dest="tenants_command", required=True)
    ta = tsub.add_parser("add", help="give a tenant its NATS account (takes effect at once)")
    ta.add_argument("tenant")
    ta.set_defaults(func=_tenants_add)
    tl = tsub.add_parser("list", help="every tenant, its credentials issued and revoked")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=_tenants_list)
    tr = tsub.add_parser("remove", help="revoke all of a tenant's NATS credentials at once")
    tr.add_argument("tenant")
    tr.set_defaults(func=_tenants_remove)
    tv = tsub.add_parser("revoke", help="revoke a tenant's NATS credentials (one or all)")
    tv.add_argument("tenant")
    tv.add_argument("--user", default=None, help="the credential's user key (default: all)")
    tv.set_defaults(func=_tenants_revoke)
    tc = tsub.add_parser("creds", help="the NATS credentials issued for a tenant")
    tc.add_argument("tenant")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=_tenants_creds)
    for p in (ta, tl, tr, tv, tc):
        _targets(p)

    c = sub.add_parser("nats-creds", help="write a NATS .creds file (a tenant's, or the admin's)")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="a new credential of this tenant")
    who.add_argument("--admin", action="store_true", help="the admin identity (streams, buckets)")
    who.add_argument("--service", choices=sorted(SERVICES), help="a service's identity")
    c.add_argument("--name", default=None, help="a label for a tenant's credential")
    c.add_argument("-o", "--output", type=Path, required=True, help="file to write (- : stdout)")
    c.add_argument("--auth-dir", type=Path, default=None, help="identities folder")
    c.set_defaults(func=_nats_creds)

    i = sub.add_parser("nats-auth", help="make a deployment's NATS identities (compose, k8s)")
    isub = i.add_subparsers(dest="nats_auth_command", required=True)
    ii = isub.add_parser("init", help="keys, creds and the server's operator-mode settings")
    ii.add_argument("--dir", type=Path, required=True)
    ii.add_argument("--resolver-dir", type=Path, default=None,
                    help="where nats-server keeps accounts (default: <dir>/resolver)")  # fmt: skip
    ii.set_defaults(func=_nats_auth_init)

    pv = sub.add_parser("nats-provision", help="declare streams and buckets (admin identity)")
    pv.add_argument("--tenant", action="append", help="also add this tenant (repeatable)")
    pv.add_argument(
        "--replicas", type=int, choices=range(1, 6), default=None, metavar="R",
        help="servers each stream and bucket is kept on: 3 on a 3-node cluster (an existing one "
        "is moved); default with --auth-dir: each keeps its count (new: 1), else the local "
        "stack's (3 with --nats-cluster)",
    )  # fmt: skip
    _targets(pv)
    pv.set_defaults(func=_nats_provision)


ERRORS = (AuthError,)

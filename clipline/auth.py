"""The NATS identities of one deployment, kept in one folder: keys, creds files, tenants.

Layout of the folder (0700; every file 0600, written whole and renamed into place):
- `keys.json`: seeds of the operator, the system account and clipline's account. JetStream keeps
  an account's data under its public key, so they are made once and kept.
- `creds/<name>.creds`: `admin` (clipline's account, everything: streams and buckets), `sys`
  (the system account: pushes account changes to the server), and one per service with
  shared.identities' permissions.
- `tenants.json`: each tenant's account seed, the users issued for it and their revocations.
- `nats-auth.conf`: the server's operator-mode settings (included by its config), and
  `resolver/`: the server's account store (a full resolver: accounts and revocations pushed at
  run time, no restart).

`clipline up`, the tests' servers and compose's `nats-init` (`clipline nats-auth init`) all
build their identities here, so a cluster or Kubernetes reuses the same code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from clipline.private import write_private
from shared.config import nats_servers
from shared.contracts.ids import is_valid_tenant
from shared.identities import (
    CLIPLINE_ACCOUNT,
    SERVICES,
    SYSTEM_ACCOUNT,
    clipline_exports,
    tenant_imports,
    tenant_permissions,
)
from shared.natsjwt import (
    ACCOUNT,
    OPERATOR,
    USER,
    Key,
    Permissions,
    account_jwt,
    creds,
    operator_jwt,
    user_jwt,
)

ADMIN = "admin"
SYSTEM = "sys"
CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"


class AuthError(RuntimeError):
    """A tenant or identity that does not exist, or a change the server refused."""


@dataclass(frozen=True)
class Tenant:
    name: str
    users: int
    revoked: int
    removed: bool


class AuthDir:
    """One deployment's identities (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- the fixed identities -----------------------------------------------------------------

    @property
    def resolver_dir(self) -> Path:
        return self.path / "resolver"

    @property
    def server_config(self) -> Path:
        return self.path / "nats-auth.conf"

    def creds_file(self, name: str) -> Path:
        """`admin`, `sys` or a service's creds file."""
        return self.path / "creds" / f"{name}.creds"

    def exists(self) -> bool:
        return (self.path / "keys.json").exists()

    def init(self, resolver_dir: Path | None = None) -> AuthDir:
        """Make the keys once, then (again each time: permissions follow the code) the admin,
        system and service creds and the server's settings. Every admin, system and service
        credential issued before this call is revoked (the accounts revoke all their users
        issued until the second before), so a leaked one ends with the next fresh start.
        `resolver_dir`: where the server keeps accounts, when not under this folder (a
        container's own volume)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        with self._locked():
            keys = self._keys()
            # Revoke every user issued until `cut` (the last issue included, however recent):
            # the accounts revoke all users whose JWT was issued at or before it; the new
            # ones are issued just after it.
            cut = {"*": max(int(time.time()), self._last_issue())}
            issue = cut["*"] + 1
            operator, system, clipline = keys[OPERATOR], keys["system"], keys["clipline"]
            self._issue(ADMIN, clipline, Permissions(everything=True), issue)
            self._issue(SYSTEM, system, Permissions(everything=True), issue)
            for service in SERVICES.values():
                self._issue(service.name, clipline, service.permissions(), issue)
            write_private(self.path / "issued-at", str(issue))
            resolver = resolver_dir or self.resolver_dir
            if resolver_dir is None:  # else the server's own path (another container's)
                resolver.mkdir(mode=0o700, parents=True, exist_ok=True)
            preload = {
                system.public: account_jwt(system, operator, SYSTEM_ACCOUNT, revocations=cut),
                clipline.public: account_jwt(
                    clipline,
                    operator,
                    CLIPLINE_ACCOUNT,
                    jetstream=True,
                    exports=clipline_exports(),
                    revocations=cut,
                ),
            }
            lines = [
                f"operator: {json.dumps(operator_jwt(operator, 'clipline', system_account=system.public))}",  # noqa: E501
                f"system_account: {system.public}",
                "resolver: {",
                "  type: full",
                f"  dir: {json.dumps(str(resolver))}",
                "  allow_delete: false",
                '  interval: "2m"',
                "}",
                "resolver_preload: {",
                *(f"  {pub}: {json.dumps(jwt)}" for pub, jwt in preload.items()),
                "}",
            ]
            write_private(self.server_config, "\n".join(lines) + "\n")
        return self

    def _keys(self) -> dict[str, Key]:
        path = self.path / "keys.json"
        if path.exists():
            seeds = json.loads(path.read_text())
        else:
            seeds = {
                OPERATOR: Key.new(OPERATOR).seed,
                "system": Key.new(ACCOUNT).seed,
                "clipline": Key.new(ACCOUNT).seed,
            }
            write_private(path, json.dumps(seeds, indent=2))
        return {name: Key.of(seed) for name, seed in seeds.items()}

    def _last_issue(self) -> int:
        """When the fixed identities were last issued (their JWTs' `iat`), 0 if never."""
        path = self.path / "issued-at"
        return int(path.read_text()) if path.exists() else 0

    def _issue(self, name: str, account: Key, permissions: Permissions, at: int) -> None:
        user = Key.new(USER)
        jwt = user_jwt(user, account, name, permissions, issued_at=at)
        write_private(self.creds_file(name), creds(jwt, user))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time (two `tenants add` would each write tenants.json)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.path / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- tenants ------------------------------------------------------------------------------

    def _tenants(self) -> dict[str, dict[str, Any]]:
        path = self.path / "tenants.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_tenants(self, tenants: dict[str, dict[str, Any]]) -> None:
        write_private(self.path / "tenants.json", json.dumps(tenants, indent=2, sort_keys=True))

    def tenants(self) -> list[Tenant]:
        return [
            Tenant(name, len(t["users"]), len(t.get("revoked", {})), bool(t.get("removed_at")))
            for name, t in sorted(self._tenants().items())
        ]

    def has_tenant(self, tenant: str) -> bool:
        entry = self._tenants().get(tenant)
        return entry is not None and not entry.get("removed_at")

    def _tenant_jwt(self, tenant: str, entry: dict[str, Any]) -> str:
        keys = self._keys()
        revocations = dict(entry.get("revoked", {}))
        if entry.get("removed_at"):
            revocations["*"] = int(entry["removed_at"])  # every user issued until removal
        return account_jwt(
            Key.of(entry["account"]),
            keys[OPERATOR],
            f"tenant-{tenant}",
            imports=tenant_imports(tenant, keys["clipline"].public),
            revocations=revocations,
        )

    async def add_tenant(self, nats_url: str, tenant: str) -> bool:
        """Give `tenant` its NATS account (pushed to the server now); False if it had one.
        A removed tenant added again gets a new account (its old creds stay revoked)."""
        _check_tenant(tenant)
        with self._locked():
            tenants = self._tenants()
            entry = tenants.get(tenant)
            if entry is not None and not entry.get("removed_at"):
                await self._push(nats_url, self._tenant_jwt(tenant, entry))  # idempotent
                return False
            entry = {"account": Key.new(ACCOUNT).seed, "users": {}, "revoked": {}}
            tenants[tenant] = entry
            await self._push(nats_url, self._tenant_jwt(tenant, entry))
            self._save_tenants(tenants)
            return True

    def tenant_creds(self, tenant: str, name: str = "") -> str:
        """A new `.creds` file's text for `tenant` (one more user of its account)."""
        with self._locked():
            tenants = self._tenants()
            entry = tenants.get(tenant)
            if entry is None or entry.get("removed_at"):
                raise AuthError(f"no tenant {tenant!r}: `clipline tenants add {tenant}` first")
            user = Key.new(USER)
            label = name or f"{tenant}-{len(entry['users']) + 1}"
            jwt = user_jwt(user, Key.of(entry["account"]), label, tenant_permissions(tenant))
            entry["users"][user.public] = {"name": label, "issued_at": int(time.time())}
            self._save_tenants(tenants)
            return creds(jwt, user)

    async def revoke_tenant_creds(self, nats_url: str, tenant: str, user: str | None) -> int:
        """Revoke one user (`user` public key) or all of `tenant`'s users; takes effect now
        (the server closes their connections). Returns how many were revoked."""
        with self._locked():
            tenants = self._tenants()
            entry = tenants.get(tenant)
            if entry is None:
                raise AuthError(f"no tenant {tenant!r}")
            users = list(entry["users"]) if user is None else [user]
            unknown = [u for u in users if u not in entry["users"]]
            if unknown:
                raise AuthError(f"tenant {tenant!r} has no user {unknown[0]}")
            now = int(time.time())
            entry.setdefault("revoked", {}).update(dict.fromkeys(users, now))
            await self._push(nats_url, self._tenant_jwt(tenant, entry))
            self._save_tenants(tenants)
            return len(users)

    async def remove_tenant(self, nats_url: str, tenant: str) -> None:
        """Revoke every user of `tenant` at once (pushed: connections close now)."""
        with self._locked():
            tenants = self._tenants()
            entry = tenants.get(tenant)
            if entry is None or entry.get("removed_at"):
                raise AuthError(f"no tenant {tenant!r}")
            entry["removed_at"] = int(time.time()) + 1  # covers users issued this second
            await self._push(nats_url, self._tenant_jwt(tenant, entry))
            self._save_tenants(tenants)

    def tenant_users(self, tenant: str) -> dict[str, dict[str, Any]]:
        entry = self._tenants().get(tenant)
        if entry is None:
            raise AuthError(f"no tenant {tenant!r}")
        revoked = entry.get("revoked", {})
        return {pub: {**u, "revoked": pub in revoked} for pub, u in entry["users"].items()}

    async def _push(self, nats_url: str, account: str) -> None:
        """Send an account JWT to the server's resolver as the system user."""
        nc = await nats.connect(
            nats_servers(nats_url), user_credentials=str(self.creds_file(SYSTEM)),
            connect_timeout=5,
            max_reconnect_attempts=0, allow_reconnect=False,
        )  # fmt: skip
        try:
            reply = await nc.request(CLAIMS_UPDATE, account.encode(), timeout=5)
        finally:
            await nc.close()
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error:
            raise AuthError(f"the NATS server refused the account: {error}")


def _check_tenant(tenant: str) -> None:
    if not is_valid_tenant(tenant):
        raise AuthError(
            f"invalid tenant {tenant!r}: 1-63 of a-z, 0-9, '-' and '_', starting with a letter "
            "or digit"
        )

"""NATS decentralized auth in a few pure functions: nkeys, operator/account/user JWTs, creds files.

The JWT format is nats-io/jwt v2's: a header `{"typ": "JWT", "alg": "ed25519-nkey"}`, claims with
`jti` (a hash of the claims), `iat`, `iss` (the signer's public key), `sub` and a `nats` section,
each part base64url without padding, signed by the issuer's nkey (ed25519). Keys come from the
`nkeys` package (PyPI, nats-io's own), which nats-py uses for `user_credentials` too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys  # type: ignore[import-untyped]

OPERATOR = "operator"
ACCOUNT = "account"
USER = "user"
_PREFIX = {
    OPERATOR: nkeys.PREFIX_BYTE_OPERATOR,
    ACCOUNT: nkeys.PREFIX_BYTE_ACCOUNT,
    USER: nkeys.PREFIX_BYTE_USER,
}
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED = -1


@dataclass(frozen=True, slots=True)
class Key:
    """An nkey: its seed (the secret) and public key."""

    seed: str
    public: str

    @classmethod
    def new(cls, kind: str) -> Key:
        """A fresh random key of `kind` (operator, account or user)."""
        seed = nkeys.encode_seed(os.urandom(32), _PREFIX[kind]).decode()
        return cls.of(seed)

    @classmethod
    def of(cls, seed: str) -> Key:
        pair = nkeys.from_seed(seed.encode())
        return cls(seed, pair.public_key.decode())

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(self.seed.encode()).sign(data))

    def __repr__(self) -> str:  # the seed is a secret: never in a repr, a log or a traceback
        return f"Key(public={self.public!r})"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], issuer: Key, *, issued_at: int | None = None) -> str:
    """A JWT of `claims` (`sub`, `name`, `nats`, ...) issued and signed by `issuer`."""
    body = {**claims, "iat": int(time.time()) if issued_at is None else issued_at}
    body["iss"] = issuer.public
    body["jti"] = ""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def decode(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (for reading back what we issued)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT: expected three dot-separated parts")
    claims = json.loads(_unb64(parts[1]))
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: its claims are not an object")
    return claims


def verify(token: str, issuer_public: str) -> bool:
    """True when `token` is signed by the key `issuer_public`."""
    head, body, signature = token.split(".")
    # A public nkey is base32 of (prefix byte, 32 key bytes, 2 checksum bytes).
    raw = base64.b32decode(issuer_public + "=" * (-len(issuer_public) % 8))[1:-2]
    try:
        nacl.signing.VerifyKey(raw).verify(f"{head}.{body}".encode(), _unb64(signature))
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def operator_jwt(operator: Key, name: str, *, system_account: str) -> str:
    return encode(
        {
            "sub": operator.public,
            "name": name,
            "nats": {"type": "operator", "version": 2, "system_account": system_account},
        },
        operator,
    )


def account_jwt(
    account: Key,
    operator: Key,
    name: str,
    *,
    jetstream: bool = False,
    exports: list[dict[str, Any]] | None = None,
    imports: list[dict[str, Any]] | None = None,
    revocations: dict[str, int] | None = None,
) -> str:
    """An account JWT. `jetstream`: unlimited JetStream storage in the account (else none);
    `revocations`: user public key (or "*") -> revoke users issued at or before this time."""
    limits: dict[str, Any] = {
        "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED, "imports": UNLIMITED,
        "exports": UNLIMITED, "wildcards": True, "conn": UNLIMITED, "leaf": UNLIMITED,
    }  # fmt: skip
    if jetstream:
        limits |= {
            "mem_storage": UNLIMITED, "disk_storage": UNLIMITED, "streams": UNLIMITED,
            "consumer": UNLIMITED,
        }  # fmt: skip
    nats: dict[str, Any] = {"type": "account", "version": 2, "limits": limits}
    if exports:
        nats["exports"] = exports
    if imports:
        nats["imports"] = imports
    if revocations:
        nats["revocations"] = revocations
    return encode({"sub": account.public, "name": name, "nats": nats}, operator)


@dataclass(frozen=True, slots=True)
class Permissions:
    """A user's publish and subscribe allow lists (nothing else is allowed)."""

    pub: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    everything: bool = False
    responds: bool = False
    """May answer a request it received (one reply to its reply subject, within the server's
    default two minutes) without a publish permission on the requester's inbox."""


def user_jwt(
    user: Key, account: Key, name: str, permissions: Permissions, *, issued_at: int | None = None
) -> str:
    nats: dict[str, Any] = {
        "type": "user", "version": 2, "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED,
    }  # fmt: skip
    if not permissions.everything:
        nats["pub"] = {"allow": sorted(set(permissions.pub))} if permissions.pub else {}
        nats["sub"] = {"allow": sorted(set(permissions.sub))} if permissions.sub else {}
        # An empty allow list would allow everything: deny all of what is not allowed.
        if not permissions.pub:
            nats["pub"] = {"deny": [">"]}
        if not permissions.sub:
            nats["sub"] = {"deny": [">"]}
        if permissions.responds:
            nats["resp"] = {"max": 1, "ttl": 0}  # 0: the server's default expiry
    return encode({"sub": user.public, "name": name, "nats": nats}, account, issued_at=issued_at)


def creds(jwt: str, user: Key) -> str:
    """A `.creds` file (the format of `nsc`, read by nats-py's `user_credentials=` and the
    `nats` CLI): the user's JWT and its nkey seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def creds_jwt(text: str) -> str:
    """The user JWT inside a `.creds` file's text."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index("-----BEGIN NATS USER JWT-----")
    except ValueError:
        raise ValueError("not a NATS .creds file: no user JWT block") from None
    return lines[start + 1]

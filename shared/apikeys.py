"""API keys of intake's HTTP API: issued once, stored hashed in KV, looked up by id, revocable.

A key reads `ck_<id>_<secret>`: the id (16 hex digits) names its record in the
`clipline_api_keys` bucket, the secret (43 url-safe characters, 256 bits) is never stored,
only its sha256, compared in constant time. pricing_guard's admin API issues, lists and
revokes keys; intake authenticates every request with `authenticate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from shared.contracts.ids import is_valid_tenant
from shared.jobstore import StoreConflictError, update_key
from shared.kvscan import scan
from shared.runtime import cached
from shared.streams import API_KEYS_BUCKET

PREFIX = "ck_"
KEY_RE = re.compile(r"^ck_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
NAME_MAX_CHARS = 100
TOUCH_EVERY = timedelta(minutes=1)
"""last_used_at is written at most this often per key: a busy key costs one read per request,
not a write."""


class ApiKeyRecord(BaseModel):
    """A key as stored: everything but the secret, whose sha256 alone is kept."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    tenant: str
    name: str
    secret_sha256: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def view(self) -> dict[str, object]:
        """What the admin API and the CLI show: never the key or its hash."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: `key` is shown this once and never again."""

    record: ApiKeyRecord
    key: str


class ApiKeyInputError(ValueError):
    """A tenant or name a key cannot be issued for; the message says why."""


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a presented key does not authenticate (one sentence, safe to answer with)."""

    detail: str


def digest(secret: str) -> str:
    """What is stored of a key's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(tenant: str, name: str, now: datetime) -> IssuedKey:
    """A new key of `tenant`: its record (the secret's hash only) and the key itself."""
    if not is_valid_tenant(tenant):
        raise ApiKeyInputError(f"tenant {tenant!r} must match [a-z0-9][a-z0-9_-]{{0,62}}")
    if not name.strip() or len(name) > NAME_MAX_CHARS or not name.isprintable():
        raise ApiKeyInputError(f"name must be 1..{NAME_MAX_CHARS} printable characters")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id=key_id, tenant=tenant, name=name, secret_sha256=digest(secret), created_at=now
    )
    return IssuedKey(record, f"{PREFIX}{key_id}_{secret}")


def parse(key: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    match = KEY_RE.fullmatch(key)
    return None if match is None else (match["id"], match["secret"])


def verify(record: ApiKeyRecord | None, secret: str) -> ApiKeyRecord | Denied:
    """The record when `secret` is its key's and it is not revoked. An unknown id and a wrong
    secret are refused alike, so an id cannot be probed."""
    expected = record.secret_sha256 if record is not None else digest("")
    if record is None or not hmac.compare_digest(digest(secret), expected):
        return Denied("the API key is not known")
    if record.revoked_at is not None:
        return Denied("the API key was revoked")
    return record


def touched(record: ApiKeyRecord | None, now: datetime) -> ApiKeyRecord | None:
    """The record with last_used_at = now when the last write is TOUCH_EVERY old, else None
    (nothing to write; a revoked or vanished key is never written)."""
    if record is None or record.revoked_at is not None:
        return None
    if record.last_used_at is not None and now - record.last_used_at < TOUCH_EVERY:
        return None
    return record.model_copy(update={"last_used_at": now})


def revoked(record: ApiKeyRecord | None, now: datetime) -> ApiKeyRecord | None:
    """The record revoked at `now`; None when absent or already revoked (kept as it was)."""
    if record is None or record.revoked_at is not None:
        return None
    return record.model_copy(update={"revoked_at": now})


class ApiKeys(Protocol):
    """Where keys live (records by id)."""

    async def create(self, tenant: str, name: str, now: datetime) -> IssuedKey:
        """Issue and store a new key (ApiKeyInputError for a bad tenant or name)."""
        ...

    async def get(self, key_id: str) -> ApiKeyRecord | None: ...

    async def revoke(self, key_id: str, now: datetime) -> ApiKeyRecord | None:
        """Revoke one key (a repeat changes nothing); its record, or None when unknown."""
        ...

    async def revoke_tenant(self, tenant: str, now: datetime) -> list[ApiKeyRecord]:
        """Revoke every key of `tenant`; the keys revoked now."""
        ...

    async def touch(self, key_id: str, now: datetime) -> None:
        """Note a use of the key (written only when `touched` says so)."""
        ...

    async def list(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        """Every key (of `tenant`), revoked ones too, oldest first."""
        ...


async def authenticate(
    keys: ApiKeys, authorization: str | None, now: datetime
) -> ApiKeyRecord | Denied:
    """The key record behind an `Authorization: Bearer <key>` header value, or why not."""
    if not authorization:
        return Denied("an 'Authorization: Bearer <API key>' header is needed")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return Denied("the Authorization header must be 'Bearer <API key>'")
    parsed = parse(value.strip())
    if parsed is None:
        return Denied("the API key is malformed (expected ck_<id>_<secret>)")
    key_id, secret = parsed
    found = verify(await keys.get(key_id), secret)
    if isinstance(found, ApiKeyRecord) and touched(found, now) is not None:
        await keys.touch(key_id, now)
    return found


class KvApiKeys:
    """ApiKeys in the clipline_api_keys bucket: key = the key's id, value = its record."""

    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        jetstream: Callable[[], JetStreamContext],
        bucket: str = API_KEYS_BUCKET,
    ) -> None:
        self._kv = kv
        self._jetstream = jetstream
        self._bucket = bucket

    async def create(self, tenant: str, name: str, now: datetime) -> IssuedKey:
        issued = issue(tenant, name, now)
        # create: a (2^-64 likely) id collision fails rather than replace another key
        await (await self._kv()).create(issued.record.id, issued.record.model_dump_json().encode())
        return issued

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        if not KEY_ID_RE.fullmatch(key_id):
            return None
        try:
            entry = await (await self._kv()).get(key_id)
        except KeyNotFoundError:
            return None
        return ApiKeyRecord.model_validate_json(entry.value) if entry.value else None

    async def _change(
        self, key_id: str, change: Callable[[ApiKeyRecord | None], ApiKeyRecord | None]
    ) -> ApiKeyRecord | None:
        """Compare-and-set of one record; the record written, or None when nothing was."""

        def decide(value: bytes | None) -> tuple[bytes | None, ApiKeyRecord | None]:
            new = change(ApiKeyRecord.model_validate_json(value) if value else None)
            return (None, None) if new is None else (new.model_dump_json().encode(), new)

        if not KEY_ID_RE.fullmatch(key_id):
            return None
        return await update_key(await self._kv(), key_id, decide, max_attempts=16)

    async def revoke(self, key_id: str, now: datetime) -> ApiKeyRecord | None:
        return await self._change(key_id, lambda r: revoked(r, now)) or await self.get(key_id)

    async def revoke_tenant(self, tenant: str, now: datetime) -> list[ApiKeyRecord]:
        done = [
            await self._change(r.id, lambda r: revoked(r, now)) for r in await self.list(tenant)
        ]
        return [r for r in done if r is not None]

    async def touch(self, key_id: str, now: datetime) -> None:
        with contextlib.suppress(StoreConflictError):  # others are writing it: it was used
            await self._change(key_id, lambda r: touched(r, now))

    async def list(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        found = await scan(self._jetstream(), self._bucket, ">")
        records = [ApiKeyRecord.model_validate_json(value) for _, value in found if value]
        mine = [r for r in records if tenant is None or r.tenant == tenant]
        return sorted(mine, key=lambda r: (r.created_at, r.id))


def kv_api_keys(broker: NatsBroker) -> KvApiKeys:
    """The keys in the clipline_api_keys bucket, through a service's broker (opened lazily:
    the broker has no connection until it starts)."""
    kv = cached(lambda: broker.key_value(API_KEYS_BUCKET, declare=False))
    return KvApiKeys(kv, lambda: broker.connection.jetstream())  # noqa: PLW0108

"""Caller webhooks in the clipline_callbacks KV bucket: endpoints of tenants, states of jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.intake.callbacks import Deliveries, Endpoint, job_key, tenant_key
from shared.contracts.ids import JOB_ID_RE, is_valid_tenant
from shared.jobstore import StoreConflictError, read_revision

MAX_CAS_ATTEMPTS = 16


class KvCallbacks:
    """Reads a tenant's endpoint; changes a job's delivery state by compare-and-set."""

    def __init__(self, kv: Callable[[], Awaitable[KeyValue]]) -> None:
        self._kv = kv

    async def endpoint(self, tenant: str) -> Endpoint | None:
        if not is_valid_tenant(tenant):
            return None
        _, raw = await read_revision(await self._kv(), tenant_key(tenant))
        return Endpoint.model_validate_json(raw) if raw else None

    async def set_endpoint(self, tenant: str, endpoint: Endpoint | None) -> None:
        """Admin: replace (None: delete) a tenant's endpoint and secret."""
        kv = await self._kv()
        if endpoint is None:
            await kv.delete(tenant_key(tenant))
        else:
            await kv.put(tenant_key(tenant), endpoint.model_dump_json().encode())

    async def deliveries(self, tenant: str, job_id: str) -> Deliveries | None:
        if not is_valid_tenant(tenant) or not JOB_ID_RE.fullmatch(job_id):
            return None
        _, raw = await read_revision(await self._kv(), job_key(tenant, job_id))
        return Deliveries.model_validate_json(raw) if raw else None

    async def change(
        self,
        tenant: str,
        job_id: str,
        change: Callable[[Deliveries | None], Deliveries | None],
    ) -> Deliveries | None:
        """Apply `change` to the job's state by compare-and-set (re-read and re-decided when
        another writer won); the state written, or None when `change` wrote nothing."""
        kv = await self._kv()
        key = job_key(tenant, job_id)
        for _ in range(MAX_CAS_ATTEMPTS):
            revision, raw = await read_revision(kv, key)
            current = Deliveries.model_validate_json(raw) if raw else None
            new = change(current)
            if new is None:
                return None
            value = new.model_dump_json().encode()
            try:
                if revision == 0:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue
            return new
        raise StoreConflictError(f"callbacks state of {job_id}: too many concurrent writers")

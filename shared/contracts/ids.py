"""Deterministic identifiers: job ids from idempotency keys, event ids from their cause."""

from __future__ import annotations

import re
import uuid

_NAMESPACE = uuid.UUID("6f1d3c1e-8a52-4b0b-9d3e-2f7f0f6b7c11")
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
JOB_ID_RE = re.compile(r"^job_[0-9a-f]{32}$")


def job_id_for(tenant: str, idempotency_key: str) -> str:
    """The job id a (tenant, idempotency key) pair always maps to: retries find the same job."""
    return "job_" + uuid.uuid5(_NAMESPACE, f"job:{tenant}:{idempotency_key}").hex


def derived_event_id(cause_id: str, kind: str, *extra: str) -> str:
    """An output event's id from its cause: a redelivered input re-emits a droppable duplicate."""
    return "evt_" + uuid.uuid5(_NAMESPACE, ":".join((cause_id, kind, *extra))).hex


def fact_event_id(job_id: str, kind: str, key: str = "") -> str:
    """The id of a fact about a job (submitted, generated, ...): one id per (job, kind[, key])."""
    return "evt_" + uuid.uuid5(_NAMESPACE, f"fact:{job_id}:{kind}:{key}").hex


def is_valid_tenant(tenant: str) -> bool:
    """Tenants are subject tokens: lowercase letters, digits, '-' and '_'."""
    return bool(TENANT_RE.fullmatch(tenant))  # fullmatch: `$` would let "acme\n" through

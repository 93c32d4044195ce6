"""The `callbacks` member of GET /v1/jobs/{id}: the job's webhook deliveries, from the KV."""

from __future__ import annotations

import logging

from services.intake.ports import Deps
from shared.contracts.jobs import JobRecordV1

log = logging.getLogger("clipline.intake.http")


async def callbacks_view(deps: Deps, record: JobRecordV1) -> dict[str, object]:
    """`{"callbacks": <the delivery state> | null}` (null: nothing sent yet, or nothing to
    send); `{"callbacks": {"error": "unavailable"}}` when the state cannot be read now (the
    job itself is still shown). Nothing when the deployment sends no webhooks."""
    if deps.callbacks is None:
        return {}
    try:
        state = await deps.callbacks.store.deliveries(record.tenant, record.job_id)
    except Exception as exc:  # NATS or KV unreachable: the record alone is still an answer
        log.warning("intake: could not read the webhooks of job %s (%s)", record.job_id, exc)
        return {"callbacks": {"error": "unavailable"}}
    return {"callbacks": state.model_dump(mode="json") if state is not None else None}

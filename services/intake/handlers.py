"""Intake's NATS entry point: a request on `clipline.job.requested.v1.<tenant>` is taken by
the use cases (usecases.py) for the subject's tenant; a body's `tenant` is never trusted."""

from __future__ import annotations

from typing import Annotated

from services.intake import callbacks_send
from services.intake.domain import Invalid, decode, parse_request_subject, tenant_token
from services.intake.ports import Deps
from services.intake.usecases import SERVICE, asked_by, refuse, take
from shared.contracts import JobAcceptedV1, JobCancelRequestedV1, JobRejectedV1
from shared.contracts.requests import REQUESTS_ROOT
from shared.identities import INTAKE_REQUESTS_DURABLE
from shared.messaging import NO_TENANT, Context, Incoming, Message, ServiceRouter
from shared.streams import REQUESTS

DURABLE = INTAKE_REQUESTS_DURABLE  # declared with its permissions in shared.identities
MAX_ERRORS = 1_000_000
"""A request has no job record yet: giving up would lose it, so errors retry (capped backoff)."""


async def raw_body(msg: Incoming) -> bytes:  # async: FastStream runs a sync one in a thread
    """The request's bytes, undecoded: FastStream's default decoder lets json.loads'
    RecursionError (a nesting bomb) escape before the handler runs, which would retry the
    request forever; `decode` judges the bytes instead, and the request is rejected."""
    return msg.body


async def on_job_requested(msg: Message, deps: Annotated[Deps, Context("deps")]) -> None:
    # The tenant is the subject's token (NATS permissions decide who may publish there).
    # No docstring: FastStream would put it into docs/asyncapi.json.
    raw = msg.raw_message
    where = parse_request_subject(raw.subject, REQUESTS_ROOT)
    tenant = tenant_token(raw.subject, REQUESTS_ROOT)
    msg_id = msg.headers.get("Nats-Msg-Id") or f"seq:{raw.metadata.sequence.stream}"
    cause = f"{tenant or NO_TENANT}:{msg_id}"
    body = decode(msg.body)
    if isinstance(where, Invalid):
        await refuse(deps, tenant, cause, where, asked_by(body, msg_id), body=body)
        return
    await take(deps, body, tenant, cause, request_id=msg_id)


def build_router() -> ServiceRouter:
    """A router per app (its publishers belong to one broker; tests run several apps in one
    process), subscribing the module-level handler."""
    router = ServiceRouter(SERVICE, emits=[JobAcceptedV1, JobRejectedV1, JobCancelRequestedV1])
    router.on_subject(
        f"{REQUESTS_ROOT}.>", DURABLE, max_errors=MAX_ERRORS, decoder=raw_body, stream=REQUESTS,
        max_workers=32, title=f"{SERVICE} consumes {REQUESTS_ROOT}.>",
    )(on_job_requested)  # fmt: skip
    callbacks_send.subscribe(router)  # caller webhooks: the terminal events
    return router

"""House messaging: emit with Nats-Msg-Id, durable pull subscribers, retry and poison policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from faststream import AckPolicy
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.middlewares import BaseMiddleware
from faststream.nats import ConsumerConfig, NatsBroker, NatsRouter, PullSub
from faststream.nats.message import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from shared.contracts.events import (
    EVENT_TYPES,
    AssetRef,
    Event,
    InputReference,
    JobSpec,
    JobTimings,
)
from shared.contracts.jobs import JobRecordV1
from shared.streams import JOBS, JOBS_STREAM_NAME

log = logging.getLogger("clipline.messaging")
CONTRACT_MODEL_NAMES = frozenset(
    [e.__name__ for e in EVENT_TYPES]
    + [m.__name__ for m in (JobRecordV1, JobSpec, AssetRef, JobTimings, InputReference)]
)

DEFAULT_MAX_ERRORS = 8
DEFAULT_ACK_WAIT_SECONDS = 60.0
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0
HEARTBEAT_SECONDS = 15.0
UNLIMITED = -1


class Emit(Protocol):
    async def __call__(self, event: Event) -> None: ...


class Failures(Protocol):
    """What the retry policy needs from the job store (implemented by shared.runtime.Runtime)."""

    async def count_error(self, job_id: str, stage: str) -> int | None:
        """Record one more handling error of `stage` for the job; the new count (None: no job)."""
        ...

    async def fail(
        self, *, job_id: str, tenant: str, cause_id: str, reason: str, detail: str, stage: str
    ) -> None: ...


def broker_emitter(broker: NatsBroker) -> Emit:
    """Publish events to the jobs stream; `event_id` is the Nats-Msg-Id, so retries are dropped."""

    async def emit(event: Event) -> None:
        await broker.publish(
            event.model_dump(mode="json"),
            subject=event.subject,
            headers={"Nats-Msg-Id": event.event_id},
            stream=JOBS_STREAM_NAME,
        )

    return emit


def retry_delay(attempt: int) -> float:
    """Exponential backoff for a failed delivery `attempt` (1-based), capped."""
    return float(min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True, slots=True)
class Consumer:
    """A durable consumer's error budget, known to the retry middleware by durable name."""

    durable: str
    max_errors: int


class ServiceRouter(NatsRouter):
    """A router whose subscribers follow the house rules (durable pull, explicit limits, ack)."""

    def __init__(self, service: str, consumers: dict[str, Consumer] | None = None) -> None:
        # RetryMiddleware turns every handler error into a delayed nak or a recorded failure;
        # NACK_ON_ERROR is only the backstop should anything escape it (never ack on error).
        super().__init__(ack_policy=AckPolicy.NACK_ON_ERROR)
        self.service = service
        self.consumers: dict[str, Consumer] = {} if consumers is None else consumers

    def on(
        self,
        event: type[Event],
        *,
        max_errors: int = DEFAULT_MAX_ERRORS,
        ack_wait: float = DEFAULT_ACK_WAIT_SECONDS,
        batch_size: int = 8,
        max_workers: int = 8,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        """Subscribe to every `event` of every tenant through one shared durable consumer."""
        return self.on_subject(
            event.subject_filter(),
            event.durable(self.service),
            max_errors=max_errors,
            ack_wait=ack_wait,
            batch_size=batch_size,
            max_workers=max_workers,
        )

    def on_subject(
        self,
        subject: str,
        durable: str,
        *,
        max_errors: int = DEFAULT_MAX_ERRORS,
        ack_wait: float = DEFAULT_ACK_WAIT_SECONDS,
        batch_size: int = 8,
        max_workers: int = 8,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        """`max_errors` bounds handler errors per job; deliveries themselves are unlimited, so
        JetStream never drops a message on its own (waits such as 429s or polls are not errors).
        """
        self.consumers[durable] = Consumer(durable, max_errors)
        return self.subscriber(
            subject,
            stream=JOBS,
            durable=durable,
            pull_sub=PullSub(batch_size=min(batch_size, max_workers), timeout=1.0),
            max_workers=max_workers,
            config=ConsumerConfig(
                durable_name=durable,
                ack_policy=JsAckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait,
                max_deliver=UNLIMITED,
            ),
        )


def _job_of(body: bytes) -> tuple[str, str] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    job_id, tenant = data.get("job_id"), data.get("tenant")
    if isinstance(job_id, str) and isinstance(tenant, str) and job_id and tenant:
        return job_id, tenant
    return None


def _is_decode_error(exc: ValidationError) -> bool:
    """FastStream validates the incoming body against a model named after the handler
    (`on_<event>`); errors from clipline's own models (corrupt state, a bug) are not poison."""
    return exc.title not in CONTRACT_MODEL_NAMES


def retry_middleware(
    service: str, consumers: dict[str, Consumer], failures: Failures
) -> Callable[..., BaseMiddleware]:
    """Broker middleware for the house delivery policy.

    - handler error: counted on the job record, then a nak with exponential delay;
    - the job's error budget is spent, or the body is undecodable (poison): the job is failed
      with a reason (record and event, so no job silently disappears), then the message is
      terminated. If even that fails, the message is nak'ed and the decision is retried.
    """

    async def give_up(msg: NatsMessage, reason: str, detail: str) -> None:
        ids = _job_of(msg.body)
        if ids is None:
            log.error("%s: undecodable message dropped: %s", service, detail)
            return
        job_id, tenant = ids
        cause = msg.headers.get("Nats-Msg-Id") or f"{msg.raw_message.subject}:{msg.message_id}"
        await failures.fail(
            job_id=job_id, tenant=tenant, cause_id=cause, reason=reason, detail=detail[:500],
            stage=service,
        )  # fmt: skip

    async def attempt_count(msg: NatsMessage) -> int:
        ids = _job_of(msg.body)
        counted = await failures.count_error(ids[0], service) if ids else None
        return counted if counted is not None else int(msg.raw_message.metadata.num_delivered)

    async def decide(msg: NatsMessage, exc: Exception) -> HandlerException:
        subject = msg.raw_message.subject
        if isinstance(exc, ValidationError) and _is_decode_error(exc):
            log.error("%s: poison message on %s: %s", service, subject, exc)
            await give_up(msg, "poison_message", f"undecodable event: {exc}")
            return RejectMessage()
        attempt = await attempt_count(msg)
        consumer = consumers.get(msg.raw_message.metadata.consumer or "")
        limit = consumer.max_errors if consumer else DEFAULT_MAX_ERRORS
        if attempt >= limit:
            log.error("%s: gave up on %s after %d errors: %r", service, subject, attempt, exc)
            await give_up(msg, "retries_exhausted", f"{type(exc).__name__}: {exc}")
            return RejectMessage()
        delay = retry_delay(attempt)
        log.warning(
            "%s: error %d on %s (%s: %s); retry in %.1fs",
            service, attempt, subject, type(exc).__name__, exc, delay,
        )  # fmt: skip
        return NackMessage(delay=delay)

    class RetryMiddleware(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            try:
                return await call_next(msg)
            except HandlerException:
                raise
            except Exception as exc:
                try:
                    outcome = await decide(msg, exc)
                except Exception as inner:
                    log.exception("%s: could not record the failure; retrying later", service)
                    raise NackMessage(delay=RETRY_CAP_SECONDS) from inner
                raise outcome from exc

    def factory(msg: Any, /, *, context: Any) -> BaseMiddleware:
        return RetryMiddleware(msg, context=context)

    return factory


@asynccontextmanager
async def heartbeat(msg: NatsMessage, every: float = HEARTBEAT_SECONDS) -> AsyncIterator[None]:
    """Tell JetStream the message is still being worked on, so long work is not redelivered."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)  # a timer, not synchronisation
            await msg.in_progress()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

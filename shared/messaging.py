"""House messaging: emit with Nats-Msg-Id, durable pull subscribers, retry and poison policy."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from faststream import AckPolicy
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.middlewares import BaseMiddleware
from faststream.nats import ConsumerConfig, NatsBroker, NatsRouter, PullSub
from faststream.nats.message import NatsMessage
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from shared.contracts.events import Event, JobFailedV1
from shared.contracts.ids import derived_event_id
from shared.streams import JOBS, JOBS_STREAM_NAME

log = logging.getLogger("clipline.messaging")

DEFAULT_MAX_DELIVER = 8
DEFAULT_ACK_WAIT_SECONDS = 60.0
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0


class Emit(Protocol):
    async def __call__(self, event: Event) -> None: ...


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
    """A durable consumer's delivery limits, known to the retry middleware by durable name."""

    durable: str
    max_deliver: int


class ServiceRouter(NatsRouter):
    """A router whose subscribers follow the house rules (durable pull, explicit limits, ack)."""

    def __init__(self, service: str, consumers: dict[str, Consumer] | None = None) -> None:
        # Ack after the handler; errors become delayed naks in RetryMiddleware, never a silent
        # terminate (REJECT_ON_ERROR) nor an immediate hot-loop redelivery (NACK_ON_ERROR).
        super().__init__(ack_policy=AckPolicy.ACK)
        self.service = service
        self.consumers: dict[str, Consumer] = {} if consumers is None else consumers

    def on(
        self,
        event: type[Event],
        *,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        ack_wait: float = DEFAULT_ACK_WAIT_SECONDS,
        batch_size: int = 8,
        max_workers: int = 8,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        """Subscribe to every `event` of every tenant through one shared durable consumer."""
        return self.on_subject(
            event.subject_filter(),
            event.durable(self.service),
            max_deliver=max_deliver,
            ack_wait=ack_wait,
            batch_size=batch_size,
            max_workers=max_workers,
        )

    def on_subject(
        self,
        subject: str,
        durable: str,
        *,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        ack_wait: float = DEFAULT_ACK_WAIT_SECONDS,
        batch_size: int = 8,
        max_workers: int = 8,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        self.consumers[durable] = Consumer(durable, max_deliver)
        return self.subscriber(
            subject,
            stream=JOBS,
            durable=durable,
            pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
            max_workers=max_workers,
            config=ConsumerConfig(
                durable_name=durable,
                ack_policy=JsAckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
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


def retry_middleware(
    service: str, consumers: dict[str, Consumer], emit: Emit
) -> Callable[..., BaseMiddleware]:
    """Broker middleware for the house delivery policy.

    - handler error: nak with exponential delay (the message comes back later);
    - last allowed delivery fails, or the payload is undecodable (poison): the job is failed
      with a reason (so no job silently disappears), then the message is terminated.
    """

    async def fail_job(msg: NatsMessage, reason: str, detail: str) -> None:
        ids = _job_of(msg.body)
        if ids is None:
            log.error(
                "%s: dropping undecodable message on %s: %s",
                service,
                msg.raw_message.subject,
                detail,
            )
            return
        job_id, tenant = ids
        cause = msg.headers.get("Nats-Msg-Id") or f"{msg.raw_message.subject}:{msg.message_id}"
        await emit(
            JobFailedV1(
                event_id=derived_event_id(cause, "failed", service),
                occurred_at=datetime.now(UTC),
                job_id=job_id,
                tenant=tenant,
                reason=reason,
                detail=detail[:500],
                stage=service,
            )
        )

    class RetryMiddleware(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            try:
                return await call_next(msg)
            except HandlerException:
                raise
            except ValidationError as exc:
                log.error("%s: poison message on %s: %s", service, msg.raw_message.subject, exc)
                await fail_job(msg, "poison_message", f"undecodable event: {exc}")
                raise RejectMessage from exc
            except Exception as exc:
                meta = msg.raw_message.metadata
                attempt = int(meta.num_delivered)
                consumer = consumers.get(meta.consumer)
                limit = consumer.max_deliver if consumer else DEFAULT_MAX_DELIVER
                if limit > 0 and attempt >= limit:
                    log.exception(
                        "%s: giving up on %s after %d attempts",
                        service,
                        msg.raw_message.subject,
                        attempt,
                    )
                    await fail_job(msg, "retries_exhausted", f"{type(exc).__name__}: {exc}")
                    raise RejectMessage from exc
                delay = retry_delay(attempt)
                log.warning(
                    "%s: attempt %d on %s failed (%s: %s); retry in %.1fs",
                    service,
                    attempt,
                    msg.raw_message.subject,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                raise NackMessage(delay=delay) from exc

    def factory(msg: Any, /, *, context: Any) -> BaseMiddleware:
        return RetryMiddleware(msg, context=context)

    return factory

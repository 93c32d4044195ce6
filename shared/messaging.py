"""House messaging: declared publishers, decode-time poison, durable pull consumers, and the one
delivery middleware (heartbeats, error budgets, poison). One module over 300 lines on purpose:
these are the delivery rules, and each only holds together with the others."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, TypeVar

import nats.errors
from faststream import AckPolicy
from faststream._internal.context import Context as ContextField  # its field class
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.middlewares import BaseMiddleware
from faststream.nats import ConsumerConfig, JStream, NatsRouter, PullSub
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from nats.js.errors import InvalidKeyError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from shared import metrics
from shared.consume import Handling
from shared.contracts.events import (
    Event,
    JobFailedV1,
    JobRef,
    parse_event_subject,
)
from shared.contracts.ids import JOB_ID_RE, TENANT_RE
from shared.contracts.jobs import JobRecordV1
from shared.contracts.lifecycle import count_error
from shared.identities import SERVICES
from shared.jobstore import JobStore, StoreConflictError
from shared.logs import job_context, note_wait
from shared.outcomes import Emit, end_job
from shared.streams import JOBS, JOBS_STREAM_NAME, MAX_PAYLOAD_BYTES

log = logging.getLogger("clipline.messaging")

DEFAULT_MAX_ERRORS = 8
DEFAULT_ACK_WAIT_SECONDS = 8.0
"""Short, so a message held by a killed process is redelivered within seconds (under 10 s of
the kill); live handlers keep theirs with `in_progress` heartbeats (every third of ack_wait),
however long they run."""
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0
UNLIMITED = -1
DEFAULT_MAX_ACK_PENDING = 1000
"""JetStream's own default: messages a consumer may hold delivered and not yet acked."""
NO_TENANT = "_unknown"
"""Tenant token of rejections of requests that named no (valid) tenant: never a real tenant."""

E = TypeVar("E", bound=Event)


class Poison(Exception):
    """A payload that can never be handled (undecodable, invalid, oversize): decided at decode."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Unrecordable(Exception):
    """A message that names no job this service may change: its subject's tenant or job token is
    invalid (so the job could not even be failed), or its body names another job than its
    subject. Terminated and logged once; nothing is recorded or announced."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


UNRECORDABLE_ERRORS: tuple[type[Exception], ...] = (InvalidKeyError, ValidationError)
"""Errors of the job store that no retry can change: a key it refuses, a stored record that is
not a record. A message whose failure hits one is terminated, never nak'ed in a loop."""
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.Error, StoreConflictError, TimeoutError, OSError,
)  # fmt: skip
"""Errors of an unreachable or busy store: the message is retried, logged without a traceback."""


def shown(text: str, limit: int = 120) -> str:
    """Text from a message (a subject token can hold anything but dots and spaces), quoted and
    cut, for a log line."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def job_named(subject: str) -> _Job | Unrecordable:
    """The job an event subject names, or why there is none whose record could be written."""
    parsed = parse_event_subject(subject)
    if parsed is None:
        return Unrecordable("invalid_subject", "not clipline.job.<kind>.v1.<tenant>.<job_id>")
    _, tenant, job_id = parsed
    if not TENANT_RE.fullmatch(tenant):  # fullmatch: `$` would let a trailing newline by
        return Unrecordable("invalid_tenant", f"tenant token {shown(tenant, 70)} is no tenant")
    if not JOB_ID_RE.fullmatch(job_id):
        return Unrecordable("invalid_job_id", f"job token {shown(job_id, 70)} is no job id")
    return _Job(job_id, tenant)


def retry_delay(attempt: int, cap: float = RETRY_CAP_SECONDS) -> float:
    """Exponential backoff for a failed delivery `attempt` (1-based), capped at `cap` (the
    consumer's: RETRY_CAP_SECONDS unless it says less)."""
    return float(min(cap, RETRY_BASE_SECONDS * 2 ** max(0, min(attempt - 1, 64))))


def decode_event(model: type[E], body: bytes) -> E:
    """The event in `body`, or Poison with the reason it can never be one."""
    if len(body) > MAX_PAYLOAD_BYTES:
        raise Poison("poison_message", f"{len(body)} bytes exceed {MAX_PAYLOAD_BYTES}")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Poison("poison_message", f"not a valid {model.__name__}: {problems}") from None
    except (ValueError, RecursionError) as exc:  # jiter's limits, or a nesting bomb
        raise Poison("poison_message", f"undecodable {model.__name__}: {exc}") from None


def check_subject(event: Event, subject: str) -> None:
    """Unrecordable unless the body names the job its (event) subject names: a body that names
    another tenant or job is no fact about either, and changes nothing."""
    parsed = parse_event_subject(subject)
    if parsed is not None and (parsed[1], parsed[2]) != (event.tenant, event.job_id):
        raise Unrecordable(
            "subject_mismatch",
            f"the body names {shown(event.tenant, 70)}/{shown(event.job_id, 70)}, "
            f"the subject {shown(parsed[1], 70)}/{shown(parsed[2], 70)}",
        )


class Incoming(Protocol):
    """A delivered message as decoders, handlers and the delivery policy use it: FastStream's
    NatsMessage, or the house consume loop's Delivered (shared/consume.py)."""

    @property
    def raw_message(self) -> Msg: ...

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, Any]: ...

    async def in_progress(self) -> None: ...


def event_decoder(model: type[E]) -> Callable[[Incoming], Awaitable[E]]:
    """A FastStream decoder: decoding is the one place a payload is judged poison, or
    unrecordable (its subject names no valid job, or its body another job than its subject).
    Async, as FastStream runs a sync decoder in a worker thread: a thread hop per message."""

    async def decode(msg: Incoming) -> E:
        subject = msg.raw_message.subject
        if isinstance(named := job_named(subject), Unrecordable):
            raise named  # judged before the body: its job could not even be failed
        event = decode_event(model, msg.body)
        check_subject(event, subject)
        return event

    return decode


class _OnLoop(ContextField):
    """FastStream's Context parameter, resolved on the event loop: fast_depends runs a sync
    `use` in a worker thread (anyio.to_thread), one hop per parameter of every message, for
    what is a dict lookup (bench.storage_cpu measured 4 such hops per storage message)."""

    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return super().use(**kwargs)


def Context(name: str) -> Any:  # noqa: N802 (named as FastStream's, used the same way)
    """`Annotated[JobStore, Context("deps.jobs")]`: a handler parameter from the app context,
    like `faststream.Context`, without its thread hop."""
    return _OnLoop(name)


Message = Annotated[Incoming, Context("message")]
"""The delivered message itself, as `faststream.nats.annotations.NatsMessage` gives it."""


@dataclass(frozen=True, slots=True)
class _Job:
    job_id: str
    tenant: str


@dataclass(frozen=True, slots=True)
class Consumer:
    """A durable consumer's limits, known to the delivery middleware by durable name.
    `names_jobs`: its subjects are event subjects, each naming one job (intake's requests do
    not), so a failed message whose subject names no valid job is terminated, not counted."""

    durable: str
    max_errors: int
    ack_wait: float
    names_jobs: bool = True
    retry_cap: float = RETRY_CAP_SECONDS


@dataclass
class Delivery:
    """What the delivery middleware needs: the service's consumers, job store and emitter.
    Put in the broker context as "delivery" by the composition root."""

    service: str
    jobs: JobStore
    emit: Emit
    consumers: dict[str, Consumer] = field(default_factory=dict)

    async def count_error(self, job: JobRef) -> int | None:
        def change(record: JobRecordV1 | None) -> JobRecordV1 | None:
            if record is None or record.terminal:
                return None
            return count_error(record, self.service)

        updated = await self.jobs.update(job.tenant, job.job_id, change)
        return updated.errors[self.service] if updated else None

    async def give_up(self, job: JobRef, reason: str, detail: str) -> None:
        await end_job(self.jobs, self.emit, job, reason=reason, detail=detail, stage=self.service)


# -- the router -----------------------------------------------------------------------------


class ServiceRouter(NatsRouter):
    """A service's router: every event it emits is a declared publisher (so the AsyncAPI
    document lists it), every subscriber is a durable pull consumer with explicit limits."""

    def __init__(self, service: str, emits: Sequence[type[Event]] = ()) -> None:
        # The delivery middleware turns every handler error into a delayed nak or a recorded
        # outcome; NACK_ON_ERROR is only the backstop should anything escape it (never ack an
        # error, never terminate one: REJECT_ON_ERROR, the default, would).
        super().__init__(ack_policy=AckPolicy.NACK_ON_ERROR)
        self.service = service
        identity = SERVICES.get(service)
        # A pull subscription's inbox is its own (nats-py defaults it to `_INBOX.`, whatever the
        # connection's prefix): a service's identity may subscribe only under its own prefix.
        self.inbox_prefix = (identity.inbox_prefix if identity else "_INBOX") + "."
        self.consumers: dict[str, Consumer] = {}
        self.handlings: list[Handling] = []
        """Every handler as declared: what the house consume loop serves (shared/consume.py)."""
        self.tracer: trace.Tracer | None = None
        """Set with `direct` by a broker whose provider records spans: each emit is then a
        PRODUCER span of it. Unset (nothing records): no span is built, the trace of the
        emitter is carried on as it is."""
        self.direct: JetStreamContext | None = None
        """Set by a production broker once connected: emits go to JetStream straight, not
        through FastStream's publisher (an in-memory TestNatsBroker leaves it unset)."""
        # Any service may fail a job (error budget spent, poison), so each can emit `failed`.
        kinds: dict[type[Event], None] = dict.fromkeys([*emits, JobFailedV1])
        self._event_publishers = {
            kind: self.publisher(
                kind.subject_filter(),
                stream=JOBS,
                schema=kind,
                title=f"{service} emits {kind.subject_filter()}",
                description=(kind.__doc__ or "").strip().splitlines()[0],
            )
            for kind in kinds
        }

    @property
    def emits(self) -> tuple[type[Event], ...]:
        """The event kinds this service publishes (shared.identities grants exactly these)."""
        return tuple(self._event_publishers)

    async def emit(self, event: Event) -> None:
        """Publish `event` on its subject; its id is the Nats-Msg-Id, so repeats are dropped."""
        publisher = self._event_publishers.get(type(event))
        if publisher is None:
            raise TypeError(f"{self.service} does not declare {type(event).__name__}")
        headers = {"Nats-Msg-Id": event.event_id}
        if self.direct is not None:
            if self.tracer is not None:
                await self._send_traced(event, self.tracer, headers)
            else:  # nothing records: the trace is carried on, no span built
                propagate.inject(headers)  # the job's trace goes on with the event
                await self.direct.publish(
                    event.subject, event.model_dump_json().encode(), headers=headers,
                    stream=JOBS_STREAM_NAME,
                )  # fmt: skip
        else:
            await publisher.publish(
                event.model_dump(mode="json"), subject=event.subject, headers=headers,
                stream=JOBS_STREAM_NAME,
            )  # fmt: skip
        # One line per lifecycle step at INFO; progress is per poll, so DEBUG.
        level = logging.DEBUG if event.kind == "progress" else logging.INFO
        why = getattr(event, "reason", None)  # an end says why, in the same line
        with job_context(event.job_id):  # also from outside a delivery (intake's HTTP API)
            log.log(
                level, "%s: job %s %s%s", self.service, event.job_id, event.kind,
                f" ({why})" if why else "",
            )  # fmt: skip

    async def _send_traced(
        self, event: Event, tracer: trace.Tracer, headers: dict[str, str]
    ) -> None:
        """Publish `event` inside a PRODUCER span of OpenTelemetry's messaging conventions (a
        child of the span that emits it, the consumer's parent), named by the subject's
        template (low cardinality); its message id is the stream sequence JetStream gave it."""
        assert self.direct is not None
        with tracer.start_as_current_span(
            f"{event.subject_filter()} send", kind=SpanKind.PRODUCER,
            attributes=send_attributes(event),
        ) as span:  # fmt: skip
            propagate.inject(headers)
            ack = await self.direct.publish(
                event.subject, event.model_dump_json().encode(), headers=headers,
                stream=JOBS_STREAM_NAME,
            )  # fmt: skip
            span.set_attribute("messaging.message.id", str(ack.seq))
            if ack.duplicate:
                span.set_attribute("clipline.publish.duplicate", True)

    def on(
        self,
        event: type[Event],
        *,
        max_errors: int = DEFAULT_MAX_ERRORS,
        ack_wait: float = DEFAULT_ACK_WAIT_SECONDS,
        max_workers: int = 8,
        max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
        fetch_batch: int | None = None,
        retry_cap: float = RETRY_CAP_SECONDS,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        """Subscribe to every `event` of every tenant through one shared durable consumer; the
        payload is decoded (or judged poison) by the event's contract before the handler runs."""
        return self.on_subject(
            event.subject_filter(),
            event.durable(self.service),
            max_errors=max_errors,
            ack_wait=ack_wait,
            retry_cap=retry_cap,
            max_workers=max_workers,
            max_ack_pending=max_ack_pending,
            fetch_batch=fetch_batch,
            decoder=event_decoder(event),
            title=f"{self.service} consumes {event.subject_filter()}",
        )

    def on_subject(
        self,
        subject: str,
        durable: str,
        *,
        max_errors: int = DEFAULT_MAX_ERRORS,
        ack_wait: float = DEFAULT_ACK_WAIT_SECONDS,
        max_workers: int = 8,
        max_ack_pending: int = DEFAULT_MAX_ACK_PENDING,
        fetch_batch: int | None = None,
        decoder: Callable[[Incoming], Awaitable[Any]] | None = None,
        title: str | None = None,
        stream: JStream = JOBS,
        retry_cap: float = RETRY_CAP_SECONDS,
    ) -> Callable[[Callable[..., Awaitable[None]]], Any]:
        """`max_errors` bounds handler errors per job; deliveries themselves are unlimited, so
        JetStream never drops a message on its own (waits such as 429s or polls are not errors).
        An error is retried after `retry_delay`, doubling from RETRY_BASE_SECONDS up to
        `retry_cap`.

        `max_ack_pending` bounds the messages delivered and not yet acked, and a message waiting
        out a delayed nak (a durable timer: a poll, a rate-limit wait) counts: it is how many
        jobs one consumer can hold waiting at once; the rest wait in the stream.

        One pull request stands open for up to `fetch_batch` (default: `max_workers`) messages,
        each handed on as soon as it arrives (shared/pullfetch.py: one request for many
        messages, never a wait for a batch to fill); each starts, with heartbeats, as soon as
        one of `max_workers` is free. While every worker is busy, messages fetched meanwhile
        wait without heartbeats; should that outlast ack_wait, a second copy goes to another
        replica: every handler is idempotent, and the submitter's attempt lease keeps that from
        becoming a second upstream create. A consumer whose handlers can run for long (storage)
        fetches one at a time."""
        names_jobs = parse_event_subject(subject) is not None
        self.consumers[durable] = Consumer(durable, max_errors, ack_wait, names_jobs, retry_cap)
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=JsAckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=UNLIMITED,
            max_ack_pending=max_ack_pending,
        )
        batch = fetch_batch or max_workers
        declare = self.subscriber(
            subject,
            stream=stream,
            durable=durable,
            pull_sub=PullSub(batch_size=batch, timeout=5.0),
            max_workers=max_workers,
            decoder=decoder,
            title=title,
            inbox_prefix=self.inbox_prefix.encode(),
            config=config,
        )

        def register(handler: Callable[..., Awaitable[None]]) -> Any:
            self.handlings.append(
                Handling(
                    subject,
                    durable,
                    stream.name,
                    config,
                    batch,
                    max_workers,
                    self.inbox_prefix,
                    decoder,
                    handler,
                )
            )
            return declare(handler)

        return register


def send_attributes(event: Event) -> dict[str, str]:
    """The attributes of the PRODUCER span of an emit (messaging conventions, and the job)."""
    return {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": event.subject,
        "messaging.destination.template": event.subject_filter(),
        "clipline.event.id": event.event_id,
        "clipline.event.kind": event.kind,
        "clipline.job.id": event.job_id,
        "clipline.tenant": event.tenant,
    }


# -- the delivery middleware ----------------------------------------------------------------


def _metadata(msg: Any) -> Msg.Metadata | None:
    raw = getattr(msg, "raw_message", None)
    if not isinstance(raw, Msg):
        return None
    try:
        return raw.metadata
    except NotJSMessageError:
        return None


def _job_of(delivery: Delivery, metadata: Msg.Metadata, subject: str) -> _Job | Unrecordable | None:
    """The job a delivery is about: None on a consumer whose subjects name no job (intake's
    requests); Unrecordable when the subject should name one and names none that is valid."""
    consumer = delivery.consumers.get(metadata.consumer or "")
    names_jobs = consumer.names_jobs if consumer else parse_event_subject(subject) is not None
    return job_named(subject) if names_jobs else None


def rejected(delivery: Delivery, msg: Incoming, reason: str) -> RejectMessage:
    """The delivery policy gives a message up (it is terminated: a dead letter): counted in
    clipline.messages.rejected by service, durable and reason (a bounded word: the reasons of
    Unrecordable and Poison, retries_exhausted, unrecordable_failure)."""
    metadata = _metadata(msg)
    durable = (metadata.consumer or "") if metadata is not None else ""
    metrics.MESSAGES_REJECTED.add(
        1, {"service": delivery.service, "durable": durable, "reason": reason}
    )
    return RejectMessage()


async def _decide(
    delivery: Delivery, msg: Incoming, exc: Exception, job: _Job | Unrecordable | None
) -> HandlerException:
    """The outcome of a failed delivery; may raise the job store's error (see `_settle`)."""
    subject = msg.raw_message.subject
    if isinstance(exc, Unrecordable) or isinstance(job, Unrecordable):
        why = exc if isinstance(exc, Unrecordable) else f"{job} ({type(exc).__name__}: {exc})"
        log.warning("%s: terminated %s: %.300s", delivery.service, shown(subject), why)
        unrecordable = exc if isinstance(exc, Unrecordable) else job
        assert isinstance(unrecordable, Unrecordable)
        return rejected(delivery, msg, unrecordable.reason)
    if isinstance(exc, Poison):
        if job is not None:
            await delivery.give_up(job, exc.reason, exc.detail)
        log.warning("%s: poison message on %s: %s", delivery.service, shown(subject), exc.detail)
        return rejected(delivery, msg, exc.reason)
    counted = await delivery.count_error(job) if job else None
    attempt = counted if counted is not None else int(msg.raw_message.metadata.num_delivered)
    consumer = delivery.consumers.get(msg.raw_message.metadata.consumer or "")
    limit = consumer.max_errors if consumer else DEFAULT_MAX_ERRORS
    if attempt >= limit:
        if job is not None:
            await delivery.give_up(job, "retries_exhausted", f"{type(exc).__name__}: {exc}")
        log.error(
            "%s: gave up on %s after %d errors: %r", delivery.service, shown(subject), attempt, exc
        )
        return rejected(delivery, msg, "retries_exhausted")
    delay = retry_delay(attempt, consumer.retry_cap if consumer else RETRY_CAP_SECONDS)
    log.warning(
        "%s: error %d on %s (%s: %s); retry in %.1fs",
        delivery.service, attempt, shown(subject), type(exc).__name__, exc, delay,
    )  # fmt: skip
    note_wait("error_backoff", delay)
    return NackMessage(delay=delay)


async def _settle(
    delivery: Delivery, msg: Incoming, exc: Exception, job: _Job | Unrecordable | None
) -> HandlerException:
    """`_decide`, and what to do when the failure cannot be recorded: a store error no retry
    can change ends the message (one warning); any other is retried at the capped delay (a
    store outage: one warning line, no traceback; anything unexpected: with its traceback)."""
    subject = shown(msg.raw_message.subject)
    try:
        return await _decide(delivery, msg, exc, job)
    except UNRECORDABLE_ERRORS as inner:
        log.warning(
            "%s: terminated %s: its failure (%s: %.200s) cannot be recorded: %s: %.200s",
            delivery.service, subject, type(exc).__name__, exc, type(inner).__name__, inner,
        )  # fmt: skip
        return rejected(delivery, msg, "unrecordable_failure")
    except TRANSIENT_ERRORS as inner:
        log.warning(
            "%s: could not record the failure on %s (%s: %.200s); retry in %.0fs",
            delivery.service, subject, type(inner).__name__, inner, RETRY_CAP_SECONDS,
        )  # fmt: skip
        return NackMessage(delay=RETRY_CAP_SECONDS)
    except Exception:
        log.exception("%s: could not record the failure on %s; retrying", delivery.service, subject)
        return NackMessage(delay=RETRY_CAP_SECONDS)


class DeliveryMiddleware(BaseMiddleware):
    """The house delivery policy, for every message of a service:

    - a message on a job's consumer whose subject names no valid job (a tenant or job token
      that is not one: its job could not even be failed) is terminated and logged once,
      judged at decode before the body; so is an event whose body names another job than its
      subject;
    - while the handler runs, `in_progress` heartbeats keep the message (a short ack_wait then
      only matters when the process died);
    - Poison (decided at decode): the job is failed with the reason, the message terminated;
    - any other error is never poison: it is counted on the job record (the budget survives
      crashes and replicas) and retried with a delayed nak; when the budget is spent the job is
      failed with `retries_exhausted`;
    - if even recording fails: a store error no retry can change (a refused key, a record that
      does not parse) terminates the message, any other (an outage) naks it for later.
    """

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        return await handle_delivery(self.context.get("delivery"), msg, lambda: call_next(msg))


async def handle_delivery(
    delivery: Delivery | None, msg: Incoming, handle: Callable[[], Awaitable[Any]]
) -> Any:
    """Run `handle()` (decode and handler) for one delivered message under the house delivery
    policy (DeliveryMiddleware's): returns when the message is done with (ack), raises a
    HandlerException for any other outcome. `msg` is FastStream's NatsMessage or the consume
    loop's Delivered (shared/consume.py): the same `raw_message`."""
    metadata = _metadata(msg)
    if delivery is None or metadata is None:
        return await handle()  # not a JetStream delivery (e.g. a core request)
    job = _job_of(delivery, metadata, msg.raw_message.subject)
    consumer = delivery.consumers.get(metadata.consumer or "")
    every = (consumer.ack_wait if consumer else DEFAULT_ACK_WAIT_SECONDS) / 3
    with job_context(job.job_id if isinstance(job, _Job) else None):
        began = time.monotonic()
        try:
            async with heartbeat(msg, every):
                return await handle()
        except HandlerException:
            raise
        except Exception as exc:
            raise await _settle(delivery, msg, exc, job) from exc
        finally:
            note_wait("handling", time.monotonic() - began)


@asynccontextmanager
async def periodically(
    every: float | Callable[[int], float], action: Callable[[], Awaitable[object]]
) -> AsyncIterator[None]:
    """Run `action` every `every` seconds while the block runs (a failed action is skipped: a
    lost heartbeat or lease renewal only risks a redelivery, which every handler tolerates).
    `every` may instead give the wait before each run from its number (0 first: a jittered
    schedule, a first run sooner).

    The loop also stops on a flag, not only by cancellation: nats-py turns a cancellation
    inside some calls into an ordinary error (a JetStream publish waiting for its slot raises
    TooManyStalledMsgsError), which the loop would skip and carry on, and the block's exit
    would then wait for it forever (seen: a create answered just as its lease was renewed
    left its handler hanging)."""
    done = asyncio.Event()

    wait = every if callable(every) else lambda _: every

    async def loop() -> None:
        for run in itertools.count():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), wait(run))  # a timer, cut short at the end
            if done.is_set():
                return
            with contextlib.suppress(Exception):
                await action()

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        done.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class heartbeat:  # noqa: N801 (used as a function: `async with heartbeat(msg, every)`)
    """Tell JetStream the message is still being worked on, every `every` seconds while the
    block runs, so live work is not redelivered. A timer on the loop rather than
    `periodically`'s task: every message has one, and most end long before its first beat. A
    beat that fails is skipped (a lost heartbeat only risks a redelivery)."""

    __slots__ = ("_every", "_msg", "_timer")
    _sending: ClassVar[set[asyncio.Task[None]]] = set()

    def __init__(self, msg: Incoming, every: float) -> None:
        self._msg = msg
        self._every = every
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._every, self._beat)

    async def __aexit__(self, *_: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _beat(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._every, self._beat)
        task = asyncio.ensure_future(self._send())
        self._sending.add(task)  # held until sent: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    async def _send(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

"""The house consume loop: a service's durable pull consumers served straight on nats-py.

FastStream's per-message path (its subscriber, middleware chain, fast_depends argument
resolution, an anyio task group per message, and its publisher for every emit) cost about
0.75 ms of CPU per delivery and as much per emit in bench/consume.py, against ~0.04 ms for the
same fetch, decode and ack on nats-py: most of the services' CPU per job. So a production
broker (shared.runtime.ServiceBroker) does not start FastStream's subscribers: it serves each
handler a ServiceRouter declared here, under the same delivery policy
(shared.messaging.handle_delivery: heartbeats, poison, error budgets, delayed naks), and a
router's emits go to JetStream directly. The declarations stay FastStream's, so the AsyncAPI
document and the in-memory TestNatsBroker (the component tests) see the same handlers.

Per message: one span (the consumer span of OpenTelemetry's messaging conventions, in the
trace the message's headers carry), the decoder, the handler with its Context parameters
resolved once at start, then ack, nak with the delay asked, or term."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import typing
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel

from shared import pullfetch, telemetry
from shared.contracts.events import parse_event_subject

log = logging.getLogger("clipline.consume")

STOP_GRACE_SECONDS = 5.0
"""On stop, handlers still running get this long to finish before they are cancelled (their
messages are then redelivered after ack_wait, as after a crash)."""
FETCH_ERROR_PAUSE_SECONDS = 1.0
"""After a fetch fails other than by timing out (a reconnect under way), the next waits this."""


class Delivered:
    """A delivered message as handlers, decoders and the delivery policy see it: the same
    attributes FastStream's NatsMessage offers them (`raw_message`, `body`, `headers`)."""

    __slots__ = ("raw_message",)

    def __init__(self, raw: Msg) -> None:
        self.raw_message = raw

    @property
    def body(self) -> bytes:
        return self.raw_message.data

    @property
    def headers(self) -> dict[str, str]:
        return self.raw_message.headers or {}

    async def in_progress(self) -> None:
        await self.raw_message.in_progress()


@dataclass(frozen=True)
class Handling:
    """One handler as a ServiceRouter declared it: what the consume loop needs to serve it."""

    subject: str
    durable: str
    stream: str
    config: ConsumerConfig
    batch: int
    max_workers: int
    inbox_prefix: str
    decoder: Callable[[Any], Awaitable[Any]] | None
    handler: Callable[..., Awaitable[Any]]


Policy = Callable[[Any, Callable[[], Awaitable[Any]]], Awaitable[Any]]
"""shared.messaging.handle_delivery bound to the service's Delivery: runs the handling of one
message; raises a HandlerException for any outcome but ack."""


def context_name(annotation: Any) -> str | None:
    """The app-context name of a handler parameter annotated `Annotated[T, Context("x")]`."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    for extra in annotation.__metadata__:
        name = getattr(extra, "name", None)
        if isinstance(name, str) and type(extra).__name__ in {"_OnLoop", "Context"}:
            return name
    return None


def lookup(context: Any, name: str) -> Any:
    """`deps.jobs` from the broker's context: the global `deps`, then its attribute `jobs`."""
    first, *rest = name.split(".")
    value = context.get(first)
    for part in rest:
        value = getattr(value, part)
    return value


Call = Callable[[Any, Delivered], Awaitable[Any]]


def bind(handling: Handling, context: Any) -> tuple[Callable[[Delivered], Awaitable[Any]], Call]:
    """The decoder and a call of the handler with its body and Context parameters, resolved
    now (the app context is set before the broker starts; "message" is the delivery)."""
    hints = typing.get_type_hints(handling.handler, include_extras=True)
    build: list[Callable[[Any, Delivered], Any]] = []
    body_type: Any = None
    for name in inspect.signature(handling.handler).parameters:
        annotation = hints.get(name)
        wanted = context_name(annotation)
        if wanted == "message":
            build.append(lambda _body, msg: msg)
        elif wanted is not None:
            build.append(constant(lookup(context, wanted)))
        elif body_type is None:
            body_type = annotation if annotation is not None else Any
            build.append(lambda body, _msg: body)
        else:
            raise TypeError(f"{handling.handler.__qualname__}: parameter {name} is no Context")
    decoder = handling.decoder or default_decoder(body_type)
    handler = handling.handler

    async def call(body: Any, msg: Delivered) -> Any:
        return await handler(*[make(body, msg) for make in build])

    return decoder, call


def constant(value: Any) -> Callable[[Any, Delivered], Any]:
    return lambda _body, _msg: value


def default_decoder(body_type: Any) -> Callable[[Delivered], Awaitable[Any]]:
    """As FastStream without a decoder: JSON, cast to the handler's model when it names one (a
    body that does not fit raises ValidationError: an error counted and retried, not poison)."""
    model = body_type if isinstance(body_type, type) and issubclass(body_type, BaseModel) else None

    async def decode(msg: Delivered) -> Any:
        if model is not None:
            return model.model_validate_json(msg.body)
        return json.loads(msg.body) if msg.body else None

    return decode


@dataclass
class ConsumeLoop:
    """Serves one Handling: a standing pull (shared/pullfetch.py) of `batch` messages, each
    handled as soon as one of `max_workers` is free."""

    handling: Handling
    policy: Policy
    tracer: trace.Tracer
    context: Any
    spans: bool = True
    """False where nothing records spans: each message's trace is carried on, no span built."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _held: deque[Msg] = field(default_factory=deque)
    """Fetched, waiting for a free worker."""
    _fetching: asyncio.Task[None] | None = None
    _stopping: bool = False

    async def start(self, js: JetStreamContext) -> None:
        h = self.handling
        self._decode, self._call = bind(h, self.context)
        self._slots = asyncio.Semaphore(h.max_workers)
        self._span_name = f"{h.subject} process"
        sub = await js.pull_subscribe(
            h.subject, durable=h.durable, stream=h.stream, config=dataclasses.replace(h.config),
            inbox_prefix=h.inbox_prefix.encode(),
        )  # fmt: skip
        self._sub = sub
        self._fetching = asyncio.create_task(self._fetch(sub), name=f"consume {h.durable}")

    async def stop(self) -> None:
        """Fetch no more and unsubscribe (the standing pull request then delivers nothing more
        here); hand back at once what was fetched and not started (a nak: another replica takes
        it now, not after ack_wait); give running handlers STOP_GRACE_SECONDS. Not nats-py's
        drain, which would wait for the messages left in the subscription."""
        self._stopping = True
        if self._fetching is not None:
            self._fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetching
            unstarted = [*self._held, *pullfetch.take_delivered(self._sub)]
            self._held.clear()
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            for raw in [*unstarted, *pullfetch.take_delivered(self._sub)]:
                with contextlib.suppress(Exception):
                    await raw.nak()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> None:
        h = self.handling
        while not self._stopping:
            try:
                msgs = await sub.fetch(h.batch, timeout=5.0)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a reconnect under way, a closed connection
                log.warning("%s: fetch failed (%s: %s)", h.durable, type(exc).__name__, exc)
                await asyncio.sleep(FETCH_ERROR_PAUSE_SECONDS)
                continue
            self._held.extend(msgs)
            while self._held:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(self._held.popleft()))
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _handle(self, raw: Msg) -> None:
        msg = Delivered(raw)
        with self._span(raw) as span:
            try:
                await self.policy(msg, lambda: self._run(msg))
            except NackMessage as nack:
                answer, how = raw.nak(**nack.extra_options), "nak"
                failed(span, nack)
            except RejectMessage as reject:
                answer, how = raw.term(), "term"
                failed(span, reject, "terminated")
            except AckMessage:
                answer, how = raw.ack(), "ack"
            except Exception as exc:  # the policy lets nothing else out; a backstop all the same
                log.exception("%s: unhandled error on %s", self.handling.durable, raw.subject)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                answer, how = raw.nak(), "nak"
            else:
                answer, how = raw.ack(), "ack"
            span.set_attribute("clipline.delivery.outcome", how)
            with contextlib.suppress(Exception):  # lost with the connection: redelivered anyway
                await answer

    def _span(self, raw: Msg) -> contextlib.AbstractContextManager[trace.Span]:
        if not self.spans:
            return telemetry.carried(raw.headers)
        parent = propagate.extract(raw.headers) if raw.headers else None
        return self.tracer.start_as_current_span(
            self._span_name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=consumer_attributes(self.handling, raw),
            record_exception=False,
            set_status_on_exception=False,
        )

    async def _run(self, msg: Delivered) -> Any:
        body = await self._decode(msg)
        return await self._call(body, msg)


def consumer_attributes(handling: Handling, raw: Msg) -> dict[str, str | int]:
    """The CONSUMER span's attributes (OpenTelemetry's messaging conventions): the concrete
    subject as destination name and the subscription's as its template (the span's name, low
    cardinality), the durable as consumer group, the stream sequence as message id; and the
    job the subject names (event subjects: kind, tenant, job id)."""
    found: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": raw.subject,
        "messaging.destination.template": handling.subject,
        "messaging.consumer.group.name": handling.durable,
    }
    if raw.reply:
        try:
            metadata = raw.metadata
        except nats.errors.NotJSMessageError:  # not a JetStream delivery: no sequence
            metadata = None
        if metadata is not None:
            found["messaging.message.id"] = str(metadata.sequence.stream)
            found["clipline.delivery.attempt"] = metadata.num_delivered
    if (job := parse_event_subject(raw.subject)) is not None:
        found["clipline.event.kind"], found["clipline.tenant"], found["clipline.job.id"] = job
    return found


def failed(span: trace.Span, outcome: BaseException, status: str | None = None) -> None:
    """Record on the span the error an outcome was decided from (a nak for a wait has none),
    and mark it failed; a message terminated (`status`) is a failure even without one."""
    cause = outcome.__cause__
    if isinstance(cause, Exception):
        span.record_exception(cause)
        span.set_status(Status(StatusCode.ERROR, status or type(cause).__name__))
    elif status is not None:
        span.set_status(Status(StatusCode.ERROR, status))

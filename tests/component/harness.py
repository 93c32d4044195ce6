"""Run one service's router under TestNatsBroker with fake ports; record publishes and acks.

TestNatsBroker delivers a publish synchronously to every matching subscriber, so when `send`
returns, the handler has run and everything it emitted is recorded: no waiting needed. It has
no JetStream (no redelivery, dedup or KV), so acks and naks are recorded instead of acted on,
and a redelivery is simply the same event sent again with a higher delivery count. Inputs carry
a JetStream ack subject as their reply, so handlers and the retry middleware read real delivery
metadata (consumer name, delivery count, stream sequence) as they do in production.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from unittest.mock import patch

from faststream import AckPolicy
from faststream.nats import NatsBroker, TestNatsBroker
from faststream.nats.annotations import NatsMessage
from faststream.nats.testing import PatchedMessage
from opentelemetry.sdk.trace import TracerProvider

from shared.contracts import Event, JobAcceptedV1, JobAdmittedV1, JobRecordV1, JobSpec, JobStatus
from shared.contracts.requests import REQUESTS_ROOT
from shared.messaging import Message, ServiceRouter
from shared.outcomes import Emit
from shared.runtime import make_broker, wire
from shared.streams import JOBS, JOBS_STREAM_NAME, REQUESTS_STREAM_NAME
from tests.fakes import InMemoryInputStore, InMemoryJobStore, InMemoryUpstreamIndex

UNREACHABLE_NATS = "nats://127.0.0.1:1"  # never dialled under TestNatsBroker
TENANT = "acme"
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="a paper boat in the rain")
LIFECYCLE = (
    JobStatus.ACCEPTED,
    JobStatus.ADMITTED,
    JobStatus.SUBMITTED,
    JobStatus.GENERATING,
    JobStatus.GENERATED,
)

E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Published:
    subject: str
    msg_id: str | None
    body: Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the handler finished a delivery: ack, nak (with delay), term; or a heartbeat."""

    subject: str
    action: str
    delay: float | None = None


async def _raw_body(msg: NatsMessage) -> bytes:  # async: no thread hop (test_delivery)
    return msg.body


@dataclass
class Bus:
    published: list[Published] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)

    def events(self, kind: type[E]) -> list[E]:
        """Every published event of `kind`, decoded with its contract."""
        prefix = kind.subject_filter().removesuffix("*.*")
        return [kind.model_validate(p.body) for p in self.published if p.subject.startswith(prefix)]

    def one(self, kind: type[E]) -> E:
        found = self.events(kind)
        assert len(found) == 1, f"expected one {kind.__name__}, got {found}"
        return found[0]

    def kinds(self) -> list[str]:
        return [p.subject.split(".")[2] for p in self.published]

    def actions(self, subject: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.subject == subject]

    def watch(self, broker: NatsBroker) -> None:
        """Record every message on the jobs stream (manual ack: never changes an outcome)."""

        # A raw decoder: FastStream's default one raises on a nesting bomb before we see it.
        @broker.subscriber(
            "clipline.job.>", stream=JOBS, ack_policy=AckPolicy.MANUAL, decoder=_raw_body
        )
        async def record(msg: Message) -> None:
            body: Any
            try:
                body = json.loads(msg.body)
            except (ValueError, RecursionError):
                body = None  # not JSON (garbage, or nested past the parser's limit)
            msg_id = msg.headers.get("Nats-Msg-Id")
            self.published.append(Published(msg.raw_message.subject, msg_id, body))


@dataclass(frozen=True)
class Fakes:
    """The in-memory ports a service's deps are built from, and the router's emitter."""

    jobs: InMemoryJobStore
    inputs: InMemoryInputStore
    upstream: InMemoryUpstreamIndex
    emit: Emit


@dataclass
class Harness:
    service: str
    broker: NatsBroker
    jobs: InMemoryJobStore
    inputs: InMemoryInputStore
    upstream: InMemoryUpstreamIndex
    bus: Bus
    deps: Any

    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def send(self, event: Event, *, delivery: int = 1) -> None:
        """Deliver an event, published as emit() does, to the service's durable consumer."""
        body = event.model_dump(mode="json")
        await self.send_raw(
            event.subject, body, event.event_id, type(event).durable(self.service), delivery
        )

    async def send_raw(
        self,
        subject: str,
        body: bytes | dict[str, Any],
        msg_id: str | None,
        durable: str,
        delivery: int = 1,
    ) -> None:
        """Deliver bytes or JSON; `msg_id` is the Nats-Msg-Id header (None: no header)."""
        seq = next(self._seq)
        requested = subject.startswith(f"{REQUESTS_ROOT}.") or subject == REQUESTS_ROOT
        stream = REQUESTS_STREAM_NAME if requested else JOBS_STREAM_NAME
        await self.broker.publish(
            body,
            subject=subject,
            headers={"Nats-Msg-Id": msg_id} if msg_id else None,
            stream=stream,
            reply_to=js_ack_subject(durable, delivery, seq, stream),
        )

    def outcomes(self, event: Event) -> list[Outcome]:
        return self.bus.actions(event.subject)


@asynccontextmanager
async def running(
    router: ServiceRouter,
    deps: Callable[[Fakes], Any],
    *,
    jobs: InMemoryJobStore | None = None,
    inputs: InMemoryInputStore | None = None,
) -> AsyncIterator[Harness]:
    """The service's router on a production broker (middlewares and all) with deps built from
    in-memory fakes, under TestNatsBroker."""
    broker = make_broker(UNREACHABLE_NATS, TracerProvider())
    fakes = Fakes(
        InMemoryJobStore() if jobs is None else jobs,
        InMemoryInputStore() if inputs is None else inputs,
        InMemoryUpstreamIndex(),
        router.emit,
    )
    bus = Bus()
    bus.watch(broker)
    built = deps(fakes)
    wire(broker, router, built, fakes.jobs)

    def recorder(action: str) -> Callable[..., Any]:
        async def record(self: PatchedMessage, delay: float | None = None) -> None:
            bus.outcomes.append(Outcome(self.subject, action, delay))

        return record

    with (
        patch.object(PatchedMessage, "ack", recorder("ack")),
        patch.object(PatchedMessage, "nak", recorder("nak")),
        patch.object(PatchedMessage, "term", recorder("term")),
        patch.object(PatchedMessage, "in_progress", recorder("in_progress")),
    ):
        async with TestNatsBroker(broker):
            yield Harness(
                router.service, broker, fakes.jobs, fakes.inputs, fakes.upstream, bus, built
            )


def js_ack_subject(durable: str, delivery: int, seq: int, stream: str = JOBS_STREAM_NAME) -> str:
    """The reply subject of a JetStream delivery: $JS.ACK.<stream>.<consumer>.<delivered>...."""
    return f"$JS.ACK.{stream}.{durable}.{delivery}.{seq}.{seq}.{time.time_ns()}.0"


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def accepted(job_id: str, spec: JobSpec = SPEC) -> JobAcceptedV1:
    """The accepted event of a job of TENANT, as intake emits it."""
    return JobAcceptedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        spec=spec, idempotency_key=f"key-{job_id}",
    )  # fmt: skip


def admitted(job_id: str, spec: JobSpec = SPEC, cost: int = 400_000) -> JobAdmittedV1:
    """The admitted event of a job of TENANT, as pricing_guard emits it."""
    return JobAdmittedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT,
        spec=spec, cost_micros=cost,
    )  # fmt: skip


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def job_record(
    job_id: str,
    status: JobStatus,
    *,
    spec: JobSpec = SPEC,
    since: datetime | None = None,
    step: timedelta = timedelta(seconds=1),
    **changes: Any,
) -> JobRecordV1:
    """A record in `status`, with a history of every earlier lifecycle step, `step` apart."""
    at = since or datetime.now(UTC) - 10 * step
    steps = [*LIFECYCLE[: LIFECYCLE.index(status) + 1]] if status in LIFECYCLE else LIFECYCLE
    history = {s.value: at + i * step for i, s in enumerate(steps)}
    if status not in LIFECYCLE:
        history[status.value] = at + len(steps) * step
    if JobStatus.ADMITTED.value in history:  # admitted at the cost `admitted()` announces
        changes.setdefault("cost_micros", 400_000)
    return JobRecordV1(
        job_id=job_id,
        tenant=TENANT,
        status=status,
        spec=spec,
        idempotency_key=f"key-{job_id}",
        request_hash="0" * 64,
        history=history,
        **changes,
    )

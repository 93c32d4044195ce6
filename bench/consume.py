"""The per-message cost of a service's messaging: FastStream's subscriber and publisher path
against the house consume loop (shared/consume.py), same nats-server, same handler, same run.

Run: python -m bench.consume [messages]   (or BENCH_CONSUME_MESSAGES, default 3000; ~30 s;
     make bench runs it)

A fresh secured nats-server (clipline/servers.py, provisioned as `clipline up` does); for each
path, `messages` accepted events are published first, then one process-local broker built as a
service builds it (shared/runtime.make_broker: the telemetry and delivery middlewares, the
service's tracer provider, sampling nothing as with no OTLP endpoint) consumes them through one
durable consumer with 64 workers, the handler doing nothing ("consume") or emitting one event
per message ("consume + emit", as a stage does). CPU is this process's (time.process_time) from
the broker's start to the last message handled, per message. "FastStream" is the same broker
as a plain NatsBroker: FastStream's subscribers serve the handler and its publisher emits, as
every service did before the house loop. Each handled message is acked; each emitted event is
a JetStream publish with its Nats-Msg-Id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import nats
from faststream.nats import NatsBroker
from faststream.nats.security import NatsCredentials

from clipline.servers import NatsServer, start_secured_nats, stop_pid
from shared import telemetry
from shared.contracts import JobAcceptedV1, JobAdmittedV1, JobSpec
from shared.logs import configure_logging
from shared.messaging import Context, ServiceRouter
from shared.runtime import ServiceBroker, make_broker, wire

DEFAULT_MESSAGES = 3000
WORKERS = 64
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="a paper boat")


def accepted(tenant: str, n: int) -> JobAcceptedV1:
    return JobAcceptedV1(
        event_id=f"evt_{uuid.uuid4().hex}", occurred_at=datetime.now(UTC),
        job_id=f"job_{uuid.uuid4().hex}", tenant=tenant, spec=SPEC, idempotency_key=f"k{n}",
    )  # fmt: skip


def admitted(event: JobAcceptedV1) -> JobAdmittedV1:
    return JobAdmittedV1(
        event_id="evt_b" + event.event_id[5:], occurred_at=event.occurred_at,
        job_id=event.job_id, tenant=event.tenant, spec=event.spec, cost_micros=400_000,
    )  # fmt: skip


async def run(server: NatsServer, house: bool, emit: bool, messages: int) -> float:
    """CPU microseconds per message for one path."""
    tenant = f"b{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(server.url, user_credentials=server.creds)
    js = nc.jetstream()
    for n in range(messages):
        event = accepted(tenant, n)
        await js.publish(
            event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.event_id}
        )
    await nc.close()
    provider = telemetry.make_tracer_provider("bench")
    broker: NatsBroker = (
        make_broker(server.url, provider, Path(server.creds or "")) if house else plain(server)
    )
    router = ServiceRouter("pricing_guard", emits=[JobAdmittedV1])
    handled = 0
    done = asyncio.Event()

    @router.on_subject(JobAcceptedV1.subject_filter(tenant), f"bench-{tenant}", max_workers=WORKERS)
    async def handler(event: JobAcceptedV1, deps: Annotated[object, Context("deps")]) -> None:
        nonlocal handled
        if emit:
            await router.emit(admitted(event))
        handled += 1
        if handled == messages:
            done.set()

    wire(broker, router, object(), None)  # type: ignore[arg-type]  # no job store: never fails
    began = time.process_time()
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), 300)
        return (time.process_time() - began) / messages * 1e6
    finally:
        await broker.stop()


def plain(server: NatsServer) -> NatsBroker:
    """FastStream's NatsBroker with the middlewares of the service broker."""
    house = make_broker(
        server.url, telemetry.make_tracer_provider("bench"), Path(server.creds or "")
    )
    assert isinstance(house, ServiceBroker)
    return NatsBroker(
        server.url,
        security=NatsCredentials.from_file(Path(server.creds or "")),
        middlewares=list(house.middlewares),
    )


async def main(server: NatsServer, messages: int) -> None:
    print(f"Per-message CPU of a service's messaging: {messages} messages, {WORKERS} workers")
    print(f"  {'':18} {'FastStream us/msg':>18} {'house loop us/msg':>18} {'ratio':>7}")
    for emit in (False, True):
        before = await run(server, house=False, emit=emit, messages=messages)
        after = await run(server, house=True, emit=emit, messages=messages)
        name = "consume + emit" if emit else "consume"
        print(f"  {name:18} {before:18.0f} {after:18.0f} {after / before:7.2f}")


if __name__ == "__main__":
    count = (
        int(sys.argv[1])
        if len(sys.argv) > 1
        else int(os.environ.get("BENCH_CONSUME_MESSAGES", DEFAULT_MESSAGES))
    )
    configure_logging("warning", "text")
    # FastStream's own per-message lines ("Processed", its supervisor's) left out of both paths:
    # this measures the messaging, not log formatting.
    # (FastStream sets its router logger's level itself when it starts: disabled, not levelled.)
    for name in ("clipline.broker", "faststream.access.nats"):
        logging.getLogger(name).disabled = True
    root = Path(tempfile.mkdtemp(prefix="bench-consume-"))
    nats_server, _ = start_secured_nats(root)
    try:
        import uvloop

        uvloop.run(main(nats_server, count))
    finally:
        stop_pid(nats_server.proc.pid)

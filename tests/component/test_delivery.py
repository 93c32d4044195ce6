"""The house delivery policy in every event-consuming service: a payload that can never be
decoded fails its job once (`poison_message`) and is terminated; an error raised while handling,
even a pydantic ValidationError, is counted and retried, never taken for poison."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import pytest

from services.poller import app as poller
from services.poller.domain import PollPolicy
from services.poller.ports import Deps as PollerDeps
from services.pricing_guard import app as pricing_guard
from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.ports import Deps as PricingDeps
from services.storage import app as storage
from services.storage.ports import Deps as StorageDeps
from services.submitter import app as submitter
from services.submitter.ports import Deps as SubmitterDeps
from shared.contracts import (
    Event,
    JobAcceptedV1,
    JobAdmittedV1,
    JobFailedV1,
    JobGeneratedV1,
    JobStatus,
    JobSubmittedV1,
)
from shared.contracts.ids import fact_event_id
from shared.contracts.lifecycle import UPSTREAM_STARTED
from shared.messaging import ServiceRouter
from shared.registry import load_registry
from shared.streams import MAX_PAYLOAD_BYTES
from tests.component.harness import (
    SPEC,
    TENANT,
    Fakes,
    Harness,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.component.support import FlakyJobStore, actions, settled, validation_error
from tests.fakes import FakeProvider, InMemoryAssetStore, InMemoryAtomicStore, InMemoryJobStore

POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3600.0)
VIDEO = "video_abc"


def common(job_id: str) -> dict[str, Any]:
    return {
        "event_id": new_event_id(),
        "occurred_at": datetime.now(UTC),
        "job_id": job_id,
        "tenant": TENANT,
    }


@dataclass(frozen=True)
class Service:
    """One event-consuming service: what it consumes, in which state, and how to run it."""

    name: str
    status: JobStatus
    event: Callable[[str], Event]
    router: Callable[[], ServiceRouter]
    deps: Callable[[Fakes, FakeProvider], object]
    break_inside: Callable[[FakeProvider], None]
    """Make the handler's own work raise a ValidationError (the payload itself is fine)."""


SERVICES = [
    Service(
        "pricing_guard",
        JobStatus.ACCEPTED,
        lambda j: JobAcceptedV1(**common(j), spec=SPEC, idempotency_key=f"key-{j}"),
        pricing_guard.build_router,
        lambda f, _: PricingDeps(
            f.jobs, f.emit, load_registry().provider("simulator"), KvBudgets(InMemoryAtomicStore())
        ),
        lambda _: None,  # its job store raises instead (see `harness_for`)
    ),
    Service(
        "submitter",
        JobStatus.ADMITTED,
        lambda j: JobAdmittedV1(**common(j), spec=SPEC, cost_micros=400_000),
        lambda: submitter.build_router(3),
        lambda f, p: SubmitterDeps(f.jobs, f.inputs, f.upstream, p, f.emit, 3600.0),
        lambda p: p.creates.append(validation_error()),
    ),
    Service(
        "poller",
        JobStatus.SUBMITTED,
        lambda j: JobSubmittedV1(**common(j), spec=SPEC, cost_micros=400_000, upstream_id=VIDEO),
        poller.build_router,
        lambda f, p: PollerDeps(f.jobs, f.emit, p, POLICY),
        lambda p: p.retrieves.append(validation_error()),
    ),
    Service(
        "storage",
        JobStatus.GENERATED,
        lambda j: JobGeneratedV1(**common(j), upstream_id=VIDEO, cost_micros=400_000),
        lambda: storage.build_router(3),
        lambda f, p: StorageDeps(f.jobs, f.emit, p, InMemoryAssetStore()),
        lambda p: p.download_errors.update({"video": validation_error()}),
    ),
]
BY_NAME = {s.name: s for s in SERVICES}


@asynccontextmanager
async def harness_for(
    service: Service, provider: FakeProvider, jobs: InMemoryJobStore | None = None
) -> AsyncIterator[Harness]:
    build = service.deps
    async with running(service.router(), lambda f: build(f, provider), jobs=jobs) as h:
        yield h


def bomb(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


POISON: dict[str, Callable[[dict[str, Any]], bytes | dict[str, Any]]] = {
    "garbage-bytes": lambda _: b"\xff\xfe\x00\x01 not json at all \xc3\x28",
    "empty": lambda _: b"",
    "nesting-bomb": lambda _: b"[" * 100_000 + b"]" * 100_000,
    "object-bomb": lambda _: bomb(100_000),
    "not-an-object": lambda _: b'["an", "array"]',
    "wrong-types": lambda body: body | {"occurred_at": "yesterday", "event_id": 42},
    "missing-fields": lambda body: {"job_id": body["job_id"], "tenant": TENANT},
    "future-version": lambda body: body | {"schema_version": 2},
    "oversize": lambda body: body | {"padding": "x" * MAX_PAYLOAD_BYTES},
}


def seeded(h: Harness, service: Service) -> str:
    """A job in the state the service consumes it in; its id."""
    job_id = new_job_id()
    upstream = VIDEO if service.status in UPSTREAM_STARTED else None
    h.jobs.put(job_record(job_id, service.status, upstream_id=upstream, cost_micros=400_000))
    return job_id


def provider_untouched(p: FakeProvider) -> bool:
    return not (p.created or p.retrieved or p.downloaded)


@pytest.mark.parametrize("payload", list(POISON))
@pytest.mark.parametrize("name", list(BY_NAME))
async def test_poison_fails_the_job_once_and_is_terminated(name: str, payload: str) -> None:
    service, provider = BY_NAME[name], FakeProvider()
    async with harness_for(service, provider) as h:
        job_id = seeded(h, service)
        event = service.event(job_id)
        body = POISON[payload](event.model_dump(mode="json"))
        await h.send_raw(event.subject, body, "msg-poison", type(event).durable(name))

        failed = h.bus.one(JobFailedV1)
        assert (failed.job_id, failed.tenant) == (job_id, TENANT)
        assert (failed.reason, failed.stage) == ("poison_message", name)
        assert failed.detail
        assert failed.event_id == fact_event_id(job_id, "failed")
        assert h.bus.kinds() == [event.kind, "failed"]  # nothing else was emitted
        assert actions(h.bus.actions(event.subject)) == ["term"]  # never redelivered
        record = h.jobs.records()[job_id]
        assert (record.status, record.reason, record.stage) == (
            JobStatus.FAILED,
            "poison_message",
            name,
        )
        assert record.errors == {}  # judged at decode: not a handling error
        assert provider_untouched(provider)


@pytest.mark.parametrize("name", list(BY_NAME))
async def test_poison_about_an_unknown_job_is_still_announced(name: str) -> None:
    service = BY_NAME[name]
    async with harness_for(service, FakeProvider()) as h:
        event = service.event(new_job_id())
        await h.send_raw(event.subject, b"\x00garbage", "msg-poison", type(event).durable(name))

        assert h.bus.one(JobFailedV1).reason == "poison_message"
        assert actions(h.bus.actions(event.subject)) == ["term"]
        assert h.jobs.records() == {}  # no record is made up for it


@pytest.mark.parametrize("name", list(BY_NAME))
async def test_poison_about_an_ended_job_changes_and_announces_nothing(name: str) -> None:
    service = BY_NAME[name]
    async with harness_for(service, FakeProvider()) as h:
        job_id = new_job_id()
        done = job_record(job_id, JobStatus.COMPLETED, upstream_id=VIDEO, cost_micros=400_000)
        h.jobs.put(done)
        event = service.event(job_id)
        await h.send_raw(event.subject, b"\x00garbage", "msg-poison", type(event).durable(name))

        assert h.bus.events(JobFailedV1) == []
        assert actions(h.bus.actions(event.subject)) == ["term"]
        assert h.jobs.records()[job_id] == done


@pytest.mark.parametrize("name", list(BY_NAME))
async def test_validation_error_inside_the_handler_is_retried_not_poison(name: str) -> None:
    service, provider = BY_NAME[name], FakeProvider()
    service.break_inside(provider)
    jobs = FlakyJobStore(validation_error()) if name == "pricing_guard" else None
    async with harness_for(service, provider, jobs) as h:
        job_id = seeded(h, service)
        event = service.event(job_id)
        await h.send(event)

        assert h.bus.events(JobFailedV1) == []
        assert settled(h.outcomes(event)) == [("nak", 0.5)]  # retry_delay(1)
        record = h.jobs.records()[job_id]
        assert not record.terminal
        assert record.reason is None
        assert record.errors == {name: 1}  # spends the retry budget like any handling error


@pytest.mark.parametrize("name", list(BY_NAME))
async def test_a_message_is_handled_without_a_thread_hop(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding and the handler's Context parameters run on the event loop: FastStream runs a
    sync decoder or Context lookup in a worker thread, a hop per message and parameter."""
    hops: list[object] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    service = BY_NAME[name]
    async with harness_for(service, FakeProvider()) as h:
        job_id = seeded(h, service)
        event = service.event(job_id)
        await h.send(event)
        assert actions(h.bus.actions(event.subject))  # handled: acked, or nakked to look later
    assert hops == []

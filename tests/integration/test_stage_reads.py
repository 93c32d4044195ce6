"""A job through every stage's handler on the real jobs bucket, each stage with a store of its
own (as its own process has), counting the record reads and writes each stage makes: one read
per step, and one write per lifecycle step it records."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import pytest
from nats.aio.client import Client

from services.poller import handlers as poller
from services.poller.domain import PollPolicy
from services.poller.ports import Deps as PollerDeps
from services.pricing_guard import handlers as guard
from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.ports import Deps as GuardDeps
from services.storage import handlers as storage
from services.storage.ports import Deps as StorageDeps
from services.submitter import handlers as submitter
from services.submitter.ports import Deps as SubmitterDeps
from shared.contracts import (
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobGeneratedV1,
    JobRecordV1,
    JobSpec,
    JobStatus,
    JobSubmittedV1,
)
from shared.contracts.events import Event
from shared.jobstore import KvJobStore
from shared.messaging import Message
from shared.registry import load_registry
from shared.streams import JOBS_BUCKET
from tests.conftest import seed_record
from tests.counting_kv import CountingKv
from tests.fakes import (
    FakeProvider,
    InMemoryAssetStore,
    InMemoryAtomicStore,
    InMemoryInputStore,
    InMemoryUpstreamIndex,
    upstream_video,
)

pytestmark = pytest.mark.integration
SPEC = JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="a paper boat")
POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3 * 3600.0)


class Emitted:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def one(self, kind: type[Event]) -> Event:
        found = [e for e in self.events if isinstance(e, kind)]
        assert len(found) == 1, self.events
        return found[0]


async def a_stage(nc: Client) -> tuple[KvJobStore, CountingKv]:
    """A stage's own store, as its process has one."""
    kv = CountingKv(await nc.jetstream().key_value(JOBS_BUCKET))

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    return KvJobStore(get_kv, nc.jetstream), kv


async def test_each_stage_reads_a_record_once_a_step_and_writes_each_step_once(
    nc: Client,
) -> None:
    tenant, job_id = f"t{uuid.uuid4().hex[:8]}", f"job_{uuid.uuid4().hex}"
    record = JobRecordV1(
        job_id=job_id, tenant=tenant, status=JobStatus.ACCEPTED, spec=SPEC,
        idempotency_key="k", request_hash="h",
        history={JobStatus.ACCEPTED.value: datetime.now(UTC)},
    )  # fmt: skip
    await seed_record(nc, record)
    emitted = Emitted()
    counted: dict[str, tuple[int, int]] = {}

    async def step(name: str, run: Callable[[KvJobStore], object]) -> None:
        jobs, kv = await a_stage(nc)
        await run(jobs)  # type: ignore[misc]
        counted[name] = kv.counts()

    provider = FakeProvider(
        creates=[upstream_video("video_stage1", "queued")],
        retrieves=[(upstream_video("video_stage1", "completed", progress=100), None)],
        assets={"video": b"v", "thumbnail": b"t", "spritesheet": b"s"},
    )
    budgets = KvBudgets(InMemoryAtomicStore())
    registry = load_registry().provider("simulator")

    def guard_deps(jobs: KvJobStore) -> GuardDeps:
        return GuardDeps(jobs, emitted, registry, budgets)

    accepted = JobAcceptedV1.fact(record, spec=SPEC, idempotency_key="k")
    await step("admit", lambda jobs: guard.on_job_accepted(accepted, guard_deps(jobs)))
    admitted = emitted.one(JobAdmittedV1)
    assert isinstance(admitted, JobAdmittedV1)

    def submitter_deps(jobs: KvJobStore) -> SubmitterDeps:
        upstream = InMemoryUpstreamIndex()
        return SubmitterDeps(jobs, InMemoryInputStore(), upstream, provider, emitted, 3600.0)

    await step("submit", lambda jobs: submitter.on_job_admitted(admitted, submitter_deps(jobs)))
    submitted = emitted.one(JobSubmittedV1)
    assert isinstance(submitted, JobSubmittedV1)

    def poller_deps(jobs: KvJobStore) -> PollerDeps:
        return PollerDeps(jobs, emitted, provider, POLICY)

    delivery = cast("Message", SimpleNamespace(raw_message=SimpleNamespace(reply="")))
    await step("look", lambda jobs: poller.on_job_submitted(submitted, poller_deps(jobs), delivery))
    generated = emitted.one(JobGeneratedV1)
    assert isinstance(generated, JobGeneratedV1)

    def storage_deps(jobs: KvJobStore) -> StorageDeps:
        return StorageDeps(jobs, emitted, provider, InMemoryAssetStore())

    await step("store", lambda jobs: storage.on_job_generated(generated, storage_deps(jobs)))
    completed = emitted.one(JobCompletedV1)
    assert isinstance(completed, JobCompletedV1)

    await step("settle", lambda jobs: guard.on_job_completed(completed, guard_deps(jobs)))

    final, _ = await a_stage(nc)
    ended = await final.get(tenant, job_id)
    assert ended is not None
    assert ended.status == JobStatus.COMPLETED
    assert ended.charged_micros is not None
    assert counted == {
        "admit": (1, 1),  # read to screen; `admitted`
        "submit": (1, 2),  # read to screen; `submitting` before the POST, `submitted` after
        "look": (1, 1),  # read to screen; `generated`
        "store": (1, 2),  # `storing` decided on the read; `completed`
        "settle": (1, 1),  # read to screen; the charge
    }

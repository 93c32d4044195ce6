"""Job records and the upstream index in real JetStream KV: compare-and-set, keys, lookups."""

import asyncio
import uuid

import pytest
from nats.aio.client import Client

from shared.contracts import JobRecordV1, JobSpec, JobStatus
from shared.contracts.lifecycle import IllegalTransition, complete, report_progress
from shared.jobstore import KvJobStore, KvUpstreamIndex, UpstreamOwnedError, advance
from shared.streams import JOBS_BUCKET, UPSTREAM_BUCKET
from tests.conftest import seed_record

pytestmark = pytest.mark.integration


def new_record(
    job_id: str, tenant: str = "acme", status: JobStatus = JobStatus.SUBMITTED
) -> JobRecordV1:
    return JobRecordV1(
        job_id=job_id, tenant=tenant, status=status,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k", request_hash="h",
    )  # fmt: skip


async def store(nc: Client) -> KvJobStore:
    kv = await nc.jetstream().key_value(JOBS_BUCKET)

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    return KvJobStore(get_kv, nc.jetstream, max_attempts=200)


def new_job() -> tuple[str, str]:
    return f"t{uuid.uuid4().hex[:8]}", f"job_{uuid.uuid4().hex}"


async def test_concurrent_writers_lose_no_update(nc: Client) -> None:
    jobs = await store(nc)
    tenant, job_id = new_job()
    record = new_record(job_id, tenant)
    await seed_record(nc, record)
    # 40 writers each push their own progress value; CAS retries make the highest one win,
    # and a lower value arriving later is refused by the lifecycle (progress only rises).
    values = list(range(1, 41))

    async def write(p: int) -> None:
        await advance(jobs, record, report_progress, progress=p)

    await asyncio.gather(*(write(p) for p in reversed(values)), *(write(p) for p in values))
    final = await jobs.get(tenant, job_id)
    assert final is not None
    assert final.progress == 40
    assert final.status == JobStatus.GENERATING


async def test_create_happens_once(nc: Client) -> None:
    jobs = await store(nc)
    tenant, job_id = new_job()

    def create(cur: JobRecordV1 | None) -> JobRecordV1 | None:
        return new_record(job_id, tenant, JobStatus.ACCEPTED) if cur is None else None

    results = await asyncio.gather(*(jobs.update(tenant, job_id, create) for _ in range(10)))
    assert sum(r is not None for r in results) == 1
    assert await jobs.get(tenant, job_id) is not None


async def test_terminal_job_does_not_move(nc: Client) -> None:
    jobs = await store(nc)
    tenant, job_id = new_job()
    record = new_record(job_id, tenant, JobStatus.STORING)
    await seed_record(nc, record)
    done = await advance(jobs, record, complete, assets=[])
    assert done is not None
    assert done.status == JobStatus.COMPLETED
    assert await advance(jobs, record, report_progress, progress=99) is None
    final = await jobs.get(tenant, job_id)
    assert final is not None
    assert final.status == JobStatus.COMPLETED
    # The same step again (a redelivery) finds the job already there: announce, change nothing.
    again = await advance(jobs, record, complete, assets=[])
    assert again == final


async def test_records_are_keyed_by_tenant_listed_and_found(nc: Client) -> None:
    jobs = await store(nc)
    tenant, other = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    mine = [f"job_{uuid.uuid4().hex}" for _ in range(3)]
    theirs = f"job_{uuid.uuid4().hex}"
    for job_id in mine:
        await seed_record(nc, new_record(job_id, tenant))
    await seed_record(nc, new_record(theirs, other))
    kv = await nc.jetstream().key_value(JOBS_BUCKET)
    assert (await kv.get(f"{tenant}.{mine[0]}")).value is not None
    assert sorted(r.job_id for r in await jobs.list(tenant)) == sorted(mine)
    assert [r.job_id for r in await jobs.list(other)] == [theirs]
    assert await jobs.get(tenant, theirs) is None  # another tenant's job is not under mine


async def test_upstream_index_links_once(nc: Client) -> None:
    kv = await nc.jetstream().key_value(UPSTREAM_BUCKET)

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    index = KvUpstreamIndex(get_kv)
    tenant, job_id = new_job()
    record = new_record(job_id, tenant)
    video = f"video_{uuid.uuid4().hex}"
    assert await index.owner(video) is None
    await index.link(video, record)
    await index.link(video, record)  # idempotent for the same job
    assert await index.owner(video) == (tenant, job_id)
    with pytest.raises(UpstreamOwnedError):
        await index.link(video, new_record(f"job_{uuid.uuid4().hex}", tenant))
    odd = "video with spaces/and.dots"
    await index.link(odd, record)  # upstream ids are not trusted to be valid KV keys
    assert await index.owner(odd) == (tenant, job_id)


async def test_the_store_refuses_a_move_no_step_allows(nc: Client) -> None:
    """Even code that bypasses the step functions cannot write an illegal move."""
    jobs = await store(nc)
    tenant, job_id = new_job()
    record = new_record(job_id, tenant, JobStatus.SUBMITTED)
    await seed_record(nc, record)
    backwards = record.model_copy(update={"status": JobStatus.ADMITTED})
    with pytest.raises(IllegalTransition):
        await jobs.update(tenant, job_id, lambda _: backwards)
    with pytest.raises(IllegalTransition):  # a job is born accepted
        await jobs.update(tenant, f"job_{uuid.uuid4().hex}", lambda _: record)
    done = record.model_copy(update={"status": JobStatus.COMPLETED})
    with pytest.raises(IllegalTransition):  # submitted -> completed skips generation and storage
        await jobs.update(tenant, job_id, lambda _: done)
    stored = await jobs.get(tenant, job_id)
    assert stored == record


async def test_listing_a_busy_bucket_misses_no_key(nc: Client) -> None:
    """The scan stops at the message that says nothing is pending after it, not at a count
    taken while the server was still pushing (what made nats-py's watch miss keys)."""
    jobs = await store(nc)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    ids = [f"job_{uuid.uuid4().hex}" for _ in range(300)]
    for job_id in ids:
        await seed_record(nc, new_record(job_id, tenant))
    other = asyncio.create_task(churn(nc))  # writes to other tenants while we list
    try:
        for _ in range(5):
            assert sorted(r.job_id for r in await jobs.list(tenant)) == sorted(ids)
    finally:
        other.cancel()
    assert await jobs.list(f"t{uuid.uuid4().hex[:8]}") == []


async def churn(nc: Client) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    while True:
        await seed_record(nc, new_record(f"job_{uuid.uuid4().hex}", tenant))

"""Job records in real JetStream KV: compare-and-set under concurrent writers."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client

from shared.contracts import JobRecordV1, JobSpec, JobStatus, transition
from shared.jobstore import KvJobStore
from shared.streams import JOBS_BUCKET

pytestmark = pytest.mark.integration


def new_record(job_id: str) -> JobRecordV1:
    return JobRecordV1(
        job_id=job_id, tenant="acme", status=JobStatus.GENERATING,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k", request_hash="h",
    )  # fmt: skip


async def store(nc: Client) -> KvJobStore:
    kv = await nc.jetstream().key_value(JOBS_BUCKET)

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    return KvJobStore(get_kv, max_attempts=200)


async def test_concurrent_writers_lose_no_update(nc: Client) -> None:
    jobs = await store(nc)
    job_id = f"job_{uuid.uuid4().hex}"
    await jobs.update(job_id, lambda cur: cur or new_record(job_id))
    # 40 writers each push their own progress value; CAS retries make the highest one win,
    # and a lower value arriving later never overwrites it.
    values = list(range(1, 41))
    now = datetime.now(UTC)

    async def write(p: int) -> None:
        await jobs.update(
            job_id, lambda r: r and transition(r, JobStatus.GENERATING, now, progress=p)
        )

    await asyncio.gather(*(write(p) for p in reversed(values)), *(write(p) for p in values))
    final = await jobs.get(job_id)
    assert final is not None
    assert final.progress == 40


async def test_create_happens_once(nc: Client) -> None:
    jobs = await store(nc)
    job_id = f"job_{uuid.uuid4().hex}"
    created: list[int] = []

    def create(cur: JobRecordV1 | None) -> JobRecordV1 | None:
        if cur is not None:
            return None
        created.append(1)
        return new_record(job_id)

    results = await asyncio.gather(*(jobs.update(job_id, create) for _ in range(10)))
    assert sum(r is not None for r in results) == 1
    assert await jobs.get(job_id) is not None


async def test_terminal_job_does_not_move_backwards(nc: Client) -> None:
    jobs = await store(nc)
    job_id = f"job_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    await jobs.update(job_id, lambda cur: new_record(job_id))
    await jobs.update(job_id, lambda r: r and transition(r, JobStatus.COMPLETED, now))
    again = await jobs.update(
        job_id, lambda r: r and transition(r, JobStatus.GENERATING, now, progress=99)
    )
    assert again is None
    final = await jobs.get(job_id)
    assert final is not None
    assert final.status == JobStatus.COMPLETED

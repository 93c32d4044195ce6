"""Cheap reads on the real server: every bucket allows direct gets (an old one is updated), a
read is a direct get (no `$JS.API.STREAM.MSG.GET`, no API advisory), and a stage step reads
its record once and writes it once."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType

from clipline.auth import AuthDir
from shared.contracts import JobRecordV1, JobSpec, JobStatus
from shared.contracts.lifecycle import begin_store, complete, report_progress
from shared.identities import SERVICES
from shared.jobstore import KvJobStore, advance
from shared.streams import BUDGETS_BUCKET, JOBS_BUCKET, KV_BUCKETS, ensure_bucket
from tests.conftest import seed_record
from tests.counting_kv import CountingKv

pytestmark = pytest.mark.integration


def new_record(status: JobStatus = JobStatus.SUBMITTED) -> JobRecordV1:
    return JobRecordV1(
        job_id=f"job_{uuid.uuid4().hex}", tenant=f"t{uuid.uuid4().hex[:8]}", status=status,
        spec=JobSpec(model="sora-2", size="1280x720", seconds=4, prompt="p"),
        idempotency_key="k", request_hash="h", cost_micros=400_000, upstream_id="video_1",
    )  # fmt: skip


async def test_every_bucket_allows_direct_gets(nc: Client) -> None:
    js = nc.jetstream()
    for config in KV_BUCKETS:
        info = await js.stream_info(f"KV_{config.bucket}")
        assert info.config.allow_direct, config.bucket
    assert (await js.stream_info(f"KV_{BUDGETS_BUCKET}")).config.allow_atomic


async def test_a_bucket_of_an_older_deployment_is_updated(nc: Client) -> None:
    js = nc.jetstream()
    bucket = f"test_old_{uuid.uuid4().hex[:8]}"
    old = KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE)
    kv = await js.create_key_value(old)
    await kv.put("k", b"kept")
    try:
        assert not (await js.stream_info(f"KV_{bucket}")).config.allow_direct
        declared = KeyValueConfig(bucket=bucket, history=1, storage=StorageType.FILE, direct=True)
        await ensure_bucket(js, declared, atomic=True)
        await ensure_bucket(js, declared, atomic=True)  # idempotent
        config = (await js.stream_info(f"KV_{bucket}")).config
        assert config.allow_direct
        assert config.allow_atomic
        assert (await (await js.key_value(bucket)).get("k")).value == b"kept"
    finally:
        await js.delete_key_value(bucket)


@dataclass
class Wire:
    """Every message of clipline's account, as the admin sees it."""

    messages: list[Msg] = field(default_factory=list)
    marker: asyncio.Event = field(default_factory=asyncio.Event)

    def subjects(self, prefix: str) -> list[str]:
        return [m.subject for m in self.messages if m.subject.startswith(prefix)]


@pytest.fixture
async def wire(nc: Client) -> AsyncIterator[Wire]:
    seen = Wire()

    async def on(msg: Msg) -> None:
        seen.messages.append(msg)
        if msg.subject.startswith("$JS.EVENT.ADVISORY.API"):
            seen.marker.set()

    sub = await nc.subscribe(">", cb=on)
    await nc.flush()
    try:
        yield seen
    finally:
        await sub.unsubscribe()


@pytest.fixture
async def storage_nc(provisioned: str, nats_auth: AuthDir) -> AsyncIterator[Client]:
    """A connection as the storage service (its permissions must allow the direct gets)."""
    client = await nats.connect(
        provisioned,
        user_credentials=str(nats_auth.creds_file("storage")),
        inbox_prefix=SERVICES["storage"].inbox_prefix,
    )
    try:
        yield client
    finally:
        await client.close()


async def control_api_call(nc: Client, wire: Wire, record: JobRecordV1) -> None:
    """A JetStream API call (a stream's info) and a non-direct read: the call's advisory
    marks the end of what came before, and both show what the wire would show of an API
    call and of a read that is not a direct get."""
    wire.marker.clear()
    await nc.jetstream().get_last_msg(f"KV_{JOBS_BUCKET}", f"$KV.{JOBS_BUCKET}.{record.key}")
    await nc.jetstream().stream_info(f"KV_{JOBS_BUCKET}")
    await asyncio.wait_for(wire.marker.wait(), timeout=10)
    await nc.flush()


async def test_a_stage_step_is_one_direct_get_and_one_write(
    nc: Client, storage_nc: Client, wire: Wire
) -> None:
    record = new_record(JobStatus.GENERATED)
    await seed_record(nc, record)
    kv = await storage_nc.jetstream().key_value(JOBS_BUCKET)  # stream info, before counting
    jobs = KvJobStore(_fixed(kv), storage_nc.jetstream)
    await storage_nc.flush()
    await control_api_call(nc, wire, record)  # what set-up did has been seen
    wire.messages.clear()

    found = await jobs.get(record.tenant, record.job_id)  # the screen's read
    assert found is not None
    storing = await advance(jobs, record, begin_store)  # the step's write
    assert storing is not None
    assert storing.status == JobStatus.STORING
    await storage_nc.flush()
    await control_api_call(nc, wire, record)

    key = f"$KV.{JOBS_BUCKET}.{record.key}"
    assert wire.subjects(f"$JS.API.DIRECT.GET.KV_{JOBS_BUCKET}.{key}") == [
        f"$JS.API.DIRECT.GET.KV_{JOBS_BUCKET}.{key}"
    ]
    assert wire.subjects(key) == [key]  # one write
    assert len(wire.subjects("$JS.API.STREAM.MSG.GET")) == 1  # the control's alone
    assert len(wire.subjects("$JS.EVENT.ADVISORY.API")) == 1  # the control's alone
    assert len(wire.subjects("$JS.API.STREAM.INFO")) == 1  # the control's alone


async def test_a_lost_race_reads_again_and_decides_on_the_newer_record(nc: Client) -> None:
    record = new_record(JobStatus.SUBMITTED)
    await seed_record(nc, record)
    counting = CountingKv(await nc.jetstream().key_value(JOBS_BUCKET))
    jobs = KvJobStore(_fixed(counting), nc.jetstream)
    other = KvJobStore(_fixed(await nc.jetstream().key_value(JOBS_BUCKET)), nc.jetstream)
    assert await jobs.get(record.tenant, record.job_id) is not None
    # Another process moves the job on after this one's read.
    assert await advance(other, record, report_progress, progress=50) is not None
    # A lower progress was legal on the record read, not on the newer one: refused there
    # (the job is `generating` already, as the step wanted, so the newer record is returned).
    after = await advance(jobs, record, report_progress, progress=20)
    assert after is not None
    assert after.progress == 50
    assert counting.gets == 2  # the read, and the read again after the lost write
    assert counting.writes == 1  # the lost one
    final = await jobs.get(record.tenant, record.job_id)
    assert final is not None
    assert final.progress == 50


async def test_writing_nothing_is_decided_on_a_record_just_read(nc: Client) -> None:
    """A remembered record may be old: a step it refuses is looked at again on a fresh read."""
    record = new_record(JobStatus.GENERATED)
    await seed_record(nc, record)
    counting = CountingKv(await nc.jetstream().key_value(JOBS_BUCKET))
    jobs = KvJobStore(_fixed(counting), nc.jetstream)
    old = await jobs.get(record.tenant, record.job_id)
    assert old is not None
    # Another replica moves the job on to `storing` after this one's read: completing is
    # refused on the record remembered (`generated`), allowed on the one read again.
    await seed_record(nc, record.model_copy(update={"status": JobStatus.STORING}))
    done = await advance(jobs, record, complete, assets=[])
    assert done is not None
    assert done.status == JobStatus.COMPLETED
    assert counting.gets == 2
    assert counting.writes == 1


async def test_steps_after_a_write_need_no_read(nc: Client) -> None:
    record = new_record(JobStatus.GENERATED)
    await seed_record(nc, record)
    counting = CountingKv(await nc.jetstream().key_value(JOBS_BUCKET))
    jobs = KvJobStore(_fixed(counting), nc.jetstream)
    assert await jobs.get(record.tenant, record.job_id) is not None
    assert await advance(jobs, record, begin_store) is not None
    assert await advance(jobs, record, complete, assets=[]) is not None
    assert (counting.gets, counting.writes) == (1, 2)


async def test_a_new_record_is_created_without_a_read(nc: Client) -> None:
    record = new_record(JobStatus.ACCEPTED)
    counting = CountingKv(await nc.jetstream().key_value(JOBS_BUCKET))
    jobs = KvJobStore(_fixed(counting), nc.jetstream)

    def create(current: JobRecordV1 | None) -> JobRecordV1 | None:
        return record if current is None else None

    assert await jobs.update(record.tenant, record.job_id, create, fresh=True) == record
    assert (counting.gets, counting.writes) == (0, 1)
    # A repeat finds it (the create loses), reads it and writes nothing.
    again = KvJobStore(_fixed(counting), nc.jetstream)
    assert await again.update(record.tenant, record.job_id, create, fresh=True) is None
    assert (counting.gets, counting.writes) == (1, 2)


def _fixed(kv: object):  # type: ignore[no-untyped-def]
    async def get():  # type: ignore[no-untyped-def]
        return kv

    return get

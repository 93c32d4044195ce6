"""Forged events change nothing: every stage acts from the job record, on one embedded stack.

Each forgery is published straight into the JOBS stream (as any client that may publish could),
with a fresh Nats-Msg-Id so JetStream does not drop it as a duplicate. The proofs are the
simulator's own accounting (which creates were made, with which model and seconds), the budget
reservations in clipline_budgets, the job record (its KV revision), and the one WARNING line the
stage writes for an event it ignored. Waits are on events, log lines and records, with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from clipline.stack import StackOptions, StackState
from shared.contracts import (
    Event,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCompletedV1,
    JobGeneratedV1,
    JobRecordV1,
    JobSpec,
    JobSubmittedV1,
    JobTimings,
    record_key,
)
from shared.contracts.ids import job_id_for
from shared.identities import SERVICES
from shared.streams import BUDGETS_BUCKET, JOBS_BUCKET
from tests.e2e.harness import NO_RATE_LIMITS, running_stack

pytestmark = pytest.mark.e2e
WITHIN = 60.0
SPEC = {"model": "sora-2", "size": "1280x720", "seconds": 4}
EMITTER: dict[type[Event], str] = {
    JobAcceptedV1: "intake",
    JobAdmittedV1: "pricing_guard",
    JobSubmittedV1: "submitter",
    JobGeneratedV1: "poller",
    JobCompletedV1: "storage",
}
"""Who may emit each forged kind (shared.identities): the forgery is published as that one."""
FORGED_SPEC = JobSpec(model="sora-2-pro", size="1280x720", seconds=8, prompt="another prompt")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=3.0,  # long enough to forge events while a job runs
        queue_seconds=0.1,
        poll_after_ms=200,
        env={**NO_RATE_LIMITS, "CLIPLINE_SIM_SMALL_ASSETS": "true"},
    )
    with running_stack(tmp_path_factory.mktemp("forged"), options) as state:
        yield state


@dataclass
class Events:
    """Every event of one tenant as it arrives, by (job id, kind)."""

    seen: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def on_event(self, msg: Msg) -> None:
        kind, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
        async with self.arrived:
            self.seen.setdefault((job_id, kind), json.loads(msg.data))
            self.arrived.notify_all()

    async def wait(self, job_id: str, *kinds: str) -> str:
        """The first of `kinds` the job announces (within WITHIN seconds)."""

        def found() -> str | None:
            return next((k for k in kinds if (job_id, k) in self.seen), None)

        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(found), WITHIN)
        kind = found()
        assert kind is not None
        return kind


@dataclass
class Stack:
    state: StackState
    nc: Client
    js: JetStreamContext
    tenant: str
    events: Events
    services: dict[str, Client] = field(default_factory=dict)
    """A connection as each service's own identity: a forgery is published by the service
    that may emit its kind (the worst case NATS permissions still allow)."""

    async def submit(self, prompt: str, tenant: str | None = None) -> str:
        """A real request (sora-2, 4 s); its job id."""
        tenant = tenant or self.tenant
        key = f"{tenant}-{uuid.uuid4().hex[:8]}"
        body = {**SPEC, "idempotency_key": key, "prompt": prompt}
        await self.js.publish(f"clipline.job.requested.v1.{tenant}", json.dumps(body).encode())
        return job_id_for(tenant, key)

    async def forge(self, event: Event) -> None:
        """Publish `event` into the stream as the service that may emit its kind would (a
        fresh id: never a dup)."""
        [emitter] = [n for n, i in SERVICES.items() if i.emits[0] is type(event)] or [
            n for n, i in SERVICES.items() if type(event) in i.emits
        ][:1]
        await (
            self.services[emitter]
            .jetstream()
            .publish(
                event.subject,
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": event.event_id},
            )
        )

    async def record(self, job_id: str, tenant: str | None = None) -> tuple[JobRecordV1, int]:
        """The job's record and its KV revision."""
        kv = await self.js.key_value(JOBS_BUCKET)
        entry = await kv.get(record_key(tenant or self.tenant, job_id))
        assert entry.value is not None
        return JobRecordV1.model_validate_json(entry.value), entry.revision or 0

    async def finished(self, job_id: str, tenant: str | None = None) -> JobRecordV1:
        """The job's record once it completed (its `completed` event, then the record)."""
        assert await self.events.wait(job_id, "completed", "failed", "rejected") == "completed"
        record, _ = await self.record(job_id, tenant)
        assert record.status == "completed"
        return record

    async def settled(self, job_id: str) -> tuple[JobRecordV1, int]:
        """The completed job's record once pricing_guard wrote its charge (its last write),
        and the record's revision then."""
        await self.finished(job_id)
        deadline = time.monotonic() + WITHIN
        while True:
            record, revision = await self.record(job_id)
            if record.charged_micros is not None:
                return record, revision
            assert time.monotonic() < deadline, f"{job_id} was never settled"
            await asyncio.sleep(0.1)  # polling the record with a deadline

    def creates_of(self, job_id: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.state.simulator_url}/control/creates", timeout=30)
        return [c for c in answer.json() if c["client_request_id"] == job_id]


@pytest.fixture
async def on(stack: StackState) -> AsyncIterator[Stack]:
    tenant = f"sec{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    services = {
        name: await nats.connect(
            stack.nats_url,
            user_credentials=str(stack.auth.creds_file(name)),
            inbox_prefix=identity.inbox_prefix,
        )
        for name, identity in SERVICES.items()
    }
    events = Events()
    await nc.subscribe("clipline.job.*.v1.*.*", cb=events.on_event)
    await nc.flush()  # subscribed at the server before another connection forges anything
    try:
        yield Stack(stack, nc, nc.jetstream(), tenant, events, services)
    finally:
        await nc.close()
        for client in services.values():
            await client.close()


def forged(kind: type[Event], job_id: str, tenant: str, **fields: Any) -> Any:
    return kind(
        event_id=f"evt_forged_{uuid.uuid4().hex}",
        occurred_at=datetime.now(UTC),
        job_id=job_id,
        tenant=tenant,
        **fields,
    )


async def ignored_line(state: StackState, service: str, kind: str, job_id: str) -> list[str]:
    """The WARNING lines `service` logged for ignoring a `kind` of `job_id`, once there is one
    (within WITHIN seconds): the sign that the forgery was handled."""
    log = Path(next(p.log for p in state.processes if p.name == service))
    needle = f"ignored {kind} of job {job_id}"
    deadline = time.monotonic() + WITHIN
    while True:
        lines = [x for x in log.read_text(errors="replace").splitlines() if needle in x]
        if lines:
            return lines
        assert time.monotonic() < deadline, f"{service} never logged {needle!r}"
        await asyncio.sleep(0.1)  # polling a file with a deadline, not synchronisation


def tracebacks(state: StackState, service: str) -> int:
    log = Path(next(p.log for p in state.processes if p.name == service))
    return log.read_text(errors="replace").count("Traceback")


async def test_a_forged_admitted_creates_nothing_the_record_does_not_say(on: Stack) -> None:
    job_id = await on.submit("a lighthouse at dawn")
    await on.events.wait(job_id, "accepted")
    await on.forge(
        forged(JobAdmittedV1, job_id, on.tenant, spec=FORGED_SPEC, cost_micros=2_400_000)
    )
    lines = await ignored_line(on.state, "submitter", "admitted", job_id)
    record = await on.finished(job_id)

    creates = on.creates_of(job_id)
    assert [(c["model"], c["size"], str(c["seconds"])) for c in creates] == [
        ("sora-2", "1280x720", "4")  # exactly the record's spec, once
    ]
    assert record.spec.model == "sora-2"
    assert record.spec.prompt == "a lighthouse at dawn"
    assert record.upstream_id == creates[0]["video_id"]
    assert len(lines) == 1
    assert "spec" in lines[0]
    assert "cost_micros" in lines[0]


async def test_a_forged_submitted_never_follows_another_tenants_video(on: Stack) -> None:
    other = f"oth{uuid.uuid4().hex[:8]}"
    theirs = await on.submit("their video", tenant=other)
    their_record = await on.finished(theirs, other)
    mine = await on.submit("my video")
    await on.events.wait(mine, "submitted")
    await on.forge(
        forged(
            JobSubmittedV1, mine, on.tenant,
            spec=JobSpec(**SPEC, prompt="my video"), cost_micros=400_000,
            upstream_id=their_record.upstream_id,
        )
    )  # fmt: skip
    lines = await ignored_line(on.state, "poller", "submitted", mine)
    record = await on.finished(mine)

    (create,) = on.creates_of(mine)
    assert record.upstream_id == create["video_id"] != their_record.upstream_id
    assert {a.key for a in record.assets}.isdisjoint({a.key for a in their_record.assets})
    assert len(lines) == 1
    assert "upstream_id" in lines[0]


async def test_a_forged_accepted_for_no_job_reserves_nothing(on: Stack) -> None:
    ghost = f"job_{uuid.uuid4().hex}"
    await on.forge(
        forged(
            JobAcceptedV1, ghost, on.tenant,
            spec=FORGED_SPEC, idempotency_key="forged",
        )
    )  # fmt: skip
    lines = await ignored_line(on.state, "pricing_guard", "accepted", ghost)

    budgets = await on.js.key_value(BUDGETS_BUCKET)
    for key in (f"res.{on.tenant}.{ghost}", f"open.{on.tenant}.{ghost}"):
        with pytest.raises(KeyNotFoundError):
            await budgets.get(key)
    jobs = await on.js.key_value(JOBS_BUCKET)
    with pytest.raises(KeyNotFoundError):
        await jobs.get(record_key(on.tenant, ghost))
    assert {kind for job, kind in on.events.seen if job == ghost} == {"accepted"}
    assert len(lines) == 1
    assert "no record" in lines[0]


async def test_a_forged_generated_changes_no_record(on: Stack) -> None:
    job_id = await on.submit("a quiet harbour")
    before, revision = await on.settled(job_id)
    await on.forge(
        forged(
            JobGeneratedV1, job_id, on.tenant,
            upstream_id="video_someone_elses", cost_micros=1, expires_at=datetime.now(UTC),
        )
    )  # fmt: skip
    lines = await ignored_line(on.state, "storage", "generated", job_id)

    after, revision_after = await on.record(job_id)
    assert (after, revision_after) == (before, revision)
    assert len(lines) == 1
    assert "upstream_id" in lines[0]
    assert tracebacks(on.state, "storage") == 0


async def test_a_forged_completed_does_not_end_submit_wait(on: Stack) -> None:
    """`clipline submit --wait` is woken by the forged `completed` while the record says the
    job still runs; it keeps waiting, and reports what the record says once it has ended."""
    key = f"wait-{uuid.uuid4().hex[:8]}"
    job_id = job_id_for(on.tenant, key)
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clipline.cli", "--home", on.state.home, "submit", "--wait",
        "--tenant", on.tenant, "--idempotency-key", key, "--model", "sora-2",
        "--size", "1280x720", "--seconds", "4", "--prompt", "wait for me", "--timeout", "60",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await on.events.wait(job_id, "submitted")
        now = datetime.now(UTC)
        fake = forged(
            JobCompletedV1, job_id, on.tenant, upstream_id="video_fake", assets=[],
            cost_micros=1, timings=JobTimings(accepted_at=now, completed_at=now,
                                              total_seconds=12345.0),
        )  # fmt: skip
        await on.forge(fake)
        during, _ = await on.record(job_id)
        assert not during.terminal  # the forgery came while the job ran
        output, _ = await asyncio.wait_for(cli.communicate(), WITHIN + 30)
    finally:
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
    text = output.decode()
    record, _ = await on.record(job_id)
    assert cli.returncode == 0, text
    assert record.status == "completed"
    assert f"job {job_id} completed" in text
    assert "12345" not in text  # nothing the forged event said was reported
    for asset in record.assets:
        assert asset.key in text
    assert record.upstream_id != "video_fake"
    assert "pricing_guard" not in record.errors  # the forged end was no error of the job

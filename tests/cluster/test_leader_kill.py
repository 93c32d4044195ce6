"""The NATS node leading the jobs stream and the job KV dies mid-run: every job still ends.

A 3-node cluster stack (`clipline up --nats-cluster 3`): every stream, bucket and object store
at 3 replicas. The job KV's leadership is moved to the node that leads CLIPLINE_JOBS, so one
kill takes both. 30 jobs (2 s generations) go in over NATS; when the first is submitted
upstream that node is SIGKILLed. The other two elect new leaders and the services (connected
to all three) fail over; the node is restarted (`clipline restart`). Then: every job completed,
its record terminal, exactly one terminal event per job in the stream, and exactly one upstream
create per job by the simulator's accounting. Last, all three nodes are killed: `clipline up`
starts them together (one alone has no quorum) and new jobs complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from clipline.stack import StackOptions, StackState
from shared.config import nats_servers
from shared.contracts.events import TERMINAL_KINDS
from shared.contracts.ids import job_id_for
from shared.contracts.jobs import JobRecordV1, record_key
from shared.runtime import provision
from shared.streams import (
    JOBS_BUCKET,
    JOBS_STREAM_NAME,
    KV_BUCKETS,
    LEADER_READS,
    REQUESTS_STREAM_NAME,
)
from shared.unavailable import UNAVAILABLE
from tests.e2e.harness import NO_RATE_LIMITS, clipline, current, running_stack
from tests.e2e.test_exactly_once import Watch, creates_per_job, event_or_fail, gone

pytestmark = pytest.mark.e2e
JOBS = 30
WITHIN = 150.0
JOBS_KV = f"KV_{JOBS_BUCKET}"
JS_TIMEOUT = 30.0  # the test's JetStream requests on a loaded machine (5 s by default)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    options = StackOptions(
        nats_cluster=3,
        nats_sync="1s",  # each node fsyncs every second (docs/reliability.md)
        generation_seconds=2.0,
        queue_seconds=0.1,
        poll_after_ms=200,
        env={**NO_RATE_LIMITS, "CLIPLINE_SIM_SMALL_ASSETS": "true"},
    )
    with running_stack(tmp_path_factory.mktemp("cluster"), options) as state:
        yield state


async def connect(state: StackState) -> Client:
    return await nats.connect(
        nats_servers(state.nats_url), user_credentials=state.nats_creds, max_reconnect_attempts=-1
    )


async def leader(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None, f"{stream} is not clustered"
    assert info.cluster.leader, f"{stream} has no leader"
    return str(info.cluster.leader)


async def lead_together(nc: Client, js: JetStreamContext, deadline: float) -> str:
    """The job KV's leader moved to CLIPLINE_JOBS's: its leader steps down (asking for that
    node) until that node is chosen. The node's name."""
    wanted = await leader(js, JOBS_STREAM_NAME)
    while (now := await leader(js, JOBS_KV)) != wanted:
        assert time.monotonic() < deadline, f"{JOBS_KV} stays led by {now}, not {wanted}"
        ask = json.dumps({"placement": {"preferred": wanted}}).encode()
        with contextlib.suppress(nats.errors.TimeoutError):
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{JOBS_KV}", ask, timeout=5)
        while True:  # until an election is over (the stream has a leader again)
            with contextlib.suppress(AssertionError, nats.errors.Error):
                await leader(js, JOBS_KV)
                break
            assert time.monotonic() < deadline, f"{JOBS_KV} elects no leader"
            await asyncio.sleep(0.1)  # polling the condition, not a fixed wait
    return wanted


async def publish_retrying(js: JetStreamContext, tenant: str, count: int, prompt: str) -> list[str]:
    """Requests as a careful client sends them to a cluster losing a node: a publish that gets
    no stream ack (the requests stream electing a leader) is sent again, the same request (its
    idempotency key makes it one job whatever reached the stream)."""
    job_ids = []
    for i in range(count):
        key = f"{tenant}-{i}"
        body = {
            "model": "sora-2", "size": "1280x720", "seconds": "4", "idempotency_key": key,
            "prompt": f"{prompt}, take {key}",
        }  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                await js.publish(f"clipline.job.requested.v1.{tenant}", json.dumps(body).encode())
                break
            except nats.errors.Error:
                assert time.monotonic() < deadline, f"request {key} never acked"
                await asyncio.sleep(0.2)  # a client's backoff, not a synchronisation
        job_ids.append(job_id_for(tenant, key))
    return job_ids


async def terminal_events(js: JetStreamContext, tenant: str) -> Counter[str]:
    """Terminal events per job id, read from the stream itself (not from a live subscription,
    which misses what is published while its server is down)."""
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    while True:
        try:
            sub = await js.subscribe(f"clipline.job.*.v1.{tenant}.*", ordered_consumer=True)
            break
        except UNAVAILABLE:
            assert time.monotonic() < deadline, "no consumer on the jobs stream in 60 s"
            await asyncio.sleep(1.0)  # a retry's back-off, not a synchronisation
    try:
        while True:  # each message says how many of the tenant's follow it
            msg = await sub.next_msg(timeout=10)
            kind, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
            if kind in TERMINAL_KINDS:
                counts[job_id] += 1
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return counts


async def records(js: JetStreamContext, tenant: str, job_ids: list[str]) -> dict[str, str]:
    kv = await js.key_value(JOBS_BUCKET)
    out = {}
    for job_id in job_ids:
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(record_key(tenant, job_id))
            out[job_id] = JobRecordV1.model_validate_json(entry.value or b"").status.value
    return out


async def test_every_stream_bucket_and_object_store_has_three_replicas(
    stack: StackState,
) -> None:
    nodes = current(stack.home).nats_nodes()
    assert [p.name for p in nodes] == ["nats-1", "nats-2", "nats-3"]
    for node in nodes:  # each runs JetStream with the stack's sync interval, in one cluster
        varz = httpx.get(node.health.replace("/healthz", "/varz"), timeout=5).json()
        assert varz["jetstream"]["config"]["sync_interval"] == 1_000_000_000, node.name
        assert varz["cluster"]["name"] == "clipline", node.name
    # Provisioning again without a count (a deployment's `nats-provision` run once more)
    # keeps every stream at the count it has: it never shrinks a cluster's to one.
    await provision(stack.nats_url, Path(stack.nats_creds))
    nc = await connect(stack)
    try:
        js = nc.jetstream()
        names = [JOBS_STREAM_NAME, REQUESTS_STREAM_NAME, "OBJ_clipline_inputs"]
        names += [f"KV_{b.bucket}" for b in KV_BUCKETS]
        for name in names:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3, name
            assert info.cluster is not None, name
            assert info.cluster.leader, name
            assert len(info.cluster.replicas or []) == 2, name
            if name.startswith("KV_"):  # records and the index from the leader: never stale
                assert info.config.allow_direct == (name[3:] not in LEADER_READS), name
    finally:
        await nc.close()


async def test_killing_the_leader_of_the_jobs_stream_and_kv_loses_no_job_and_creates_none_twice(
    stack: StackState, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = f"lead{uuid.uuid4().hex[:8]}"
    nc = await connect(stack)
    watch = Watch(JOBS)
    try:
        js = nc.jetstream(timeout=JS_TIMEOUT)
        node = await lead_together(nc, js, time.monotonic() + 60)
        pid = current(stack.home).find(node).pid
        killed = asyncio.Event()

        def kill() -> None:
            os.kill(pid, signal.SIGKILL)
            killed.set()

        watch.on_kind["submitted"] = kill
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=watch.on_event)
        job_ids = await publish_retrying(js, tenant, JOBS, "a lighthouse in fog")
        await event_or_fail(killed, "submitted event to kill the leader on", 60)
        killed_at = time.monotonic()
        await gone(pid)
        # The other two take over: both now lead elsewhere (asked until they answer; a short
        # timeout per question, so the figure is the election's, not a request's timeout).
        deadline, ask = time.monotonic() + 30, nc.jetstream(timeout=0.5)
        while True:
            with contextlib.suppress(AssertionError, nats.errors.Error):
                after = {await leader(ask, JOBS_STREAM_NAME), await leader(ask, JOBS_KV)}
                if node not in after:
                    break
            assert time.monotonic() < deadline, "no new leaders after the kill"
            await asyncio.sleep(0.2)  # polling the condition, not a fixed wait
        failover = time.monotonic() - killed_at
        restarted = await asyncio.to_thread(clipline, stack.home, "restart", node)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        deadline = time.monotonic() + WITHIN
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(*UNAVAILABLE):  # a loaded cluster: asked again
                states = await records(js, tenant, job_ids)
            if len(states) == JOBS and all(s in {"completed", "failed"} for s in states.values()):
                break
            await asyncio.sleep(0.5)  # polling the records, not a fixed wait
        ends = await terminal_events(js, tenant)
    finally:
        await nc.close()
    per_job, _ = creates_per_job(stack, job_ids)
    with capsys.disabled():
        print(
            f"\n[leader kill] {node} (leading {JOBS_STREAM_NAME} and {JOBS_KV}) SIGKILLed after"
            f" the first submission; new leaders in {failover:.1f}s; records"
            f" {dict(Counter(states.values()))}; terminal events per job"
            f" {dict(Counter(ends[j] for j in job_ids))}; creates per job"
            f" {dict(Counter(per_job.values()))}"
        )
    assert set(states) == set(job_ids), f"{JOBS - len(states)} jobs have no record"
    assert set(states.values()) == {"completed"}, Counter(states.values())
    assert all(ends[j] == 1 for j in job_ids), {j: ends[j] for j in job_ids if ends[j] != 1}
    assert set(per_job.values()) == {1}, {j: n for j, n in per_job.items() if n != 1}


async def test_every_node_killed_up_starts_them_together_and_jobs_go_on(
    stack: StackState,
) -> None:
    nodes = current(stack.home).nats_nodes()
    for node in nodes:
        os.kill(node.pid, signal.SIGKILL)
    for node in nodes:
        await gone(node.pid)
    # One node alone has no quorum to be healthy with: `up` starts the three, then waits.
    healed = await asyncio.to_thread(clipline, stack.home, "up")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "started again: nats-1, nats-2, nats-3;" in healed.stdout, healed.stdout
    tenant = f"quorum{uuid.uuid4().hex[:8]}"
    nc = await connect(stack)
    states: dict[str, str] = {}
    try:
        js = nc.jetstream(timeout=JS_TIMEOUT)
        job_ids = await publish_retrying(js, tenant, 3, "a ferry at dawn")
        deadline = time.monotonic() + 90
        while set(states.values()) != {"completed"} or len(states) < 3:
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.5)  # polling the records, not a fixed wait
            with contextlib.suppress(*UNAVAILABLE):  # the cluster just healed: asked again
                states = await records(js, tenant, job_ids)
    finally:
        await nc.close()
    assert len(states) == 3

"""Caller webhooks on a real nats-server, with intake's own NATS identity: signed POSTs that a
receiver verifies with standardwebhooks, retried through an outage and delivered once, never
sent again by a restarted sender, never to a private address when that is not allowed."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from nats.aio.client import Client
from opentelemetry.sdk.trace import TracerProvider
from standardwebhooks import Webhook

from clipline.auth import AuthDir
from clipline.cli import main as cli_main
from clipline.servers import LOOPBACK, free_port
from services.intake.callbacks import (
    CLAIM_SECONDS,
    Deliveries,
    Endpoint,
    claim,
    start,
    webhook_id,
)
from services.intake.callbacks_kv import KvCallbacks
from services.intake.callbacks_send import Sender, subscribe
from shared.contracts import JobCompletedV1, JobFailedV1, JobRecordV1, JobSpec, JobTimings
from shared.contracts.events import AssetRef, Event
from shared.contracts.lifecycle import JobStatus
from shared.messaging import ServiceRouter
from shared.runtime import Platform, cached, make_platform, wire
from shared.streams import CALLBACKS_BUCKET, JOBS_STREAM_NAME
from tests.conftest import seed_record
from tests.webhook_signing import SECRET

pytestmark = pytest.mark.integration
WAIT_SECONDS = 20.0


@dataclass
class Receiver:
    """A webhook receiver on a loopback port: every request it got, in order."""

    port: int
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook"

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.got.append((dict(request.headers), await request.read()))
            self.arrived.set()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        await r.stop()


async def receiver(made: list[Receiver], *, up: bool = True) -> Receiver:
    r = Receiver(free_port())
    made.append(r)
    if up:
        await r.start()
    return r


def fast(attempts: int) -> float:
    """The retry schedule of these tests: half a second, whatever the attempt."""
    return 0.5


class Intake:
    """intake's webhook sender as its app runs it: the house consume loop, intake's creds."""

    def __init__(self, url: str, creds: Path, **sender: object) -> None:
        self.platform: Platform = make_platform("intake", url, TracerProvider(), creds)
        broker = self.platform.broker
        self.store = KvCallbacks(cached(lambda: broker.key_value(CALLBACKS_BUCKET, declare=False)))
        self.sender = Sender(self.platform.jobs, self.store, **sender)  # type: ignore[arg-type]
        self.router = ServiceRouter("intake")
        subscribe(self.router)

    @property
    def callbacks(self) -> Sender:
        return self.sender

    async def start(self) -> None:
        wire(self.platform.broker, self.router, self, self.platform.jobs)
        await self.platform.broker.start()

    async def stop(self) -> None:
        await self.platform.broker.stop()
        await self.sender.close()


@pytest.fixture
async def intake(provisioned: str, nats_auth: AuthDir) -> AsyncIterator[Intake]:
    service = Intake(provisioned, nats_auth.creds_file("intake"), allow_private=True, schedule=fast)
    await service.start()
    yield service
    await service.stop()


def ended(
    tenant: str, status: JobStatus, callback_url: str | None, charged: int | None = 400_000
) -> JobRecordV1:
    """A job that ended, settled by pricing_guard (`charged`; None: not yet)."""
    at = datetime.now(UTC)
    return JobRecordV1(
        job_id=f"job_{uuid.uuid4().hex}", tenant=tenant, status=status,
        spec=JobSpec(model="sora-2", size="720x1280", seconds=4, prompt="a cat"),
        idempotency_key="k", request_hash="h", cost_micros=400_000,
        assets=[AssetRef(variant="video", bucket="b", key="k.mp4", size_bytes=10, sha256="0" * 64,
                         content_type="video/mp4")],
        reason=None if status == JobStatus.COMPLETED else "upstream_failed",
        history={"accepted": at, status.value: at}, callback_url=callback_url,
        charged_micros=charged,
    )  # fmt: skip


def event_of(record: JobRecordV1) -> Event:
    if record.status == JobStatus.COMPLETED:
        at = record.history["completed"]
        timings = JobTimings(accepted_at=at, completed_at=at, total_seconds=0.0)
        return JobCompletedV1.fact(
            record, upstream_id="video_1", assets=record.assets, cost_micros=400_000,
            timings=timings,
        )  # fmt: skip
    return JobFailedV1.fact(record, reason="upstream_failed", detail="d", stage="poller")


async def publish(nc: Client, event: Event) -> None:
    await nc.jetstream().publish(
        event.subject, event.model_dump_json().encode(), stream=JOBS_STREAM_NAME,
        headers={"Nats-Msg-Id": event.event_id},
    )  # fmt: skip


async def until_state(
    store: KvCallbacks, record: JobRecordV1, check: object, what: str
) -> Deliveries:
    """Wait (bounded) until the job's delivery state passes `check`."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        state = await store.deliveries(record.tenant, record.job_id)
        if state is not None and check(state):  # type: ignore[operator]
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never: {what}; state: {state}")
        await asyncio.sleep(0.05)  # polling the KV, with a deadline


def delivered(*names: str) -> object:
    return lambda s: all(s.targets[n].state == "delivered" for n in names)


async def test_the_job_url_and_the_tenant_endpoint_both_get_one_signed_post(
    intake: Intake, nc: Client, receivers: list[Receiver]
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    mine, theirs = await receiver(receivers), await receiver(receivers)
    await intake.store.set_endpoint(
        tenant, Endpoint(secret=SECRET, url=theirs.url, updated_at=datetime.now(UTC))
    )
    record = ended(tenant, JobStatus.COMPLETED, mine.url)
    await seed_record(nc, record)
    await publish(nc, event_of(record))

    state = await until_state(intake.store, record, delivered("job", "tenant"), "delivered")

    assert len(mine.got) == len(theirs.got) == 1
    for headers, body in (mine.got[0], theirs.got[0]):
        verified = Webhook(SECRET).verify(body, headers)  # raises unless signed with SECRET
        assert headers["webhook-id"] == webhook_id(record.job_id, "completed") == state.webhook_id
        assert verified["type"] == "video.completed"
        data = verified["data"]
        assert (data["job_id"], data["status"], data["cost_micros"]) == (
            record.job_id, "completed", 400_000,
        )  # fmt: skip
        assert data["assets"][0]["variant"] == "video"
        assert "url" not in data["assets"][0]  # no presigned URL: it is a credential
        assert SECRET not in body.decode()
    target = state.targets["job"]
    assert (target.attempts, target.last_status, target.sending_since) == (1, 204, None)
    assert target.delivered_at is not None
    assert [a.status for a in target.timeline] == [204]


async def test_the_first_attempt_waits_for_the_settled_charge_and_carries_it(
    intake: Intake, nc: Client, receivers: list[Receiver]
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await intake.store.set_endpoint(tenant, Endpoint(secret=SECRET, updated_at=datetime.now(UTC)))
    hook = await receiver(receivers)
    record = ended(tenant, JobStatus.COMPLETED, hook.url, charged=None)
    await seed_record(nc, record)
    await publish(nc, event_of(record))

    # Not settled yet: nothing is sent, nothing recorded, the event is looked at again soon.
    wait = await intake.sender.deliver(tenant, record.job_id)
    assert wait is not None
    assert 0 < wait <= 5
    assert hook.got == []
    assert await intake.store.deliveries(tenant, record.job_id) is None
    # pricing_guard settles: the charge is on the record; the consumer's next look sends it.
    settled = record.model_copy(update={"charged_micros": 360_000})
    await seed_record(nc, settled)
    state = await until_state(intake.store, record, delivered("job"), "delivered")

    assert len(hook.got) == 1
    data = Webhook(SECRET).verify(hook.got[0][1], hook.got[0][0])["data"]
    assert (data["charged_micros"], data["cost_micros"]) == (360_000, 400_000)
    assert (
        hook.got[0][0]["webhook-id"] == state.webhook_id == webhook_id(record.job_id, "completed")
    )


async def test_past_the_bound_an_unsettled_end_is_sent_with_a_null_charge_and_a_rejection_at_once(
    intake: Intake, nc: Client, receivers: list[Receiver]
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await intake.store.set_endpoint(tenant, Endpoint(secret=SECRET, updated_at=datetime.now(UTC)))
    hook = await receiver(receivers)
    disputed = ended(tenant, JobStatus.FAILED, hook.url, charged=None)  # never settled
    rejected = ended(tenant, JobStatus.REJECTED, hook.url, charged=None)
    for r in (disputed, rejected):
        await seed_record(nc, r)
    later = datetime.now(UTC) + timedelta(seconds=31)
    sender = Sender(intake.sender.jobs, intake.store, allow_private=True, schedule=fast,
                    clock=lambda: later)  # fmt: skip
    try:
        assert await intake.sender.deliver(tenant, disputed.job_id) is not None  # waits
        assert await sender.deliver(tenant, disputed.job_id) is None  # 31 s on: sent
        assert await intake.sender.deliver(tenant, rejected.job_id) is None  # never waits
    finally:
        await sender.close()
    bodies = [json.loads(body) for _, body in hook.got]
    assert [(b["type"], b["data"]["charged_micros"]) for b in bodies] == [
        ("video.failed", None), ("video.rejected", None),
    ]  # fmt: skip


async def test_a_receiver_down_then_up_gets_the_webhook_once(
    intake: Intake, nc: Client, receivers: list[Receiver]
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await intake.store.set_endpoint(tenant, Endpoint(secret=SECRET, updated_at=datetime.now(UTC)))
    down = await receiver(receivers, up=False)  # nothing listens on its port yet
    record = ended(tenant, JobStatus.FAILED, down.url)
    await seed_record(nc, record)
    await publish(nc, event_of(record))

    failing = await until_state(
        intake.store, record, lambda s: s.targets["job"].attempts >= 2, "two failed attempts"
    )
    assert failing.targets["job"].state == "pending"
    assert failing.targets["job"].last_error
    await down.start()
    state = await until_state(intake.store, record, delivered("job"), "delivered")

    assert len(down.got) == 1
    assert json.loads(down.got[0][1])["type"] == "video.failed"
    timeline = state.targets["job"].timeline
    assert timeline[-1].status == 204
    assert all(a.status is None and a.error for a in timeline[:-1])
    # Whatever comes again (a redelivery, a restarted sender): nothing more is sent.
    assert await intake.sender.deliver(tenant, record.job_id) is None
    assert len(down.got) == 1


async def test_a_restarted_sender_sends_nothing_delivered_and_waits_out_a_live_claim(
    intake: Intake, nc: Client, receivers: list[Receiver], provisioned: str, nats_auth: AuthDir
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await intake.store.set_endpoint(tenant, Endpoint(secret=SECRET, updated_at=datetime.now(UTC)))
    hook = await receiver(receivers)
    record = ended(tenant, JobStatus.COMPLETED, hook.url)
    await seed_record(nc, record)
    await publish(nc, event_of(record))
    await until_state(intake.store, record, delivered("job"), "delivered")
    await intake.stop()

    # A new process (its own connection, KV handle, sender) sees the state and sends nothing,
    # even for the same event published again under another message id (as after a lost ack).
    again = Intake(provisioned, nats_auth.creds_file("intake"), allow_private=True, schedule=fast)
    await again.start()
    try:
        redelivered = event_of(record).model_copy(update={"event_id": f"evt_{uuid.uuid4().hex}"})
        await publish(nc, redelivered)
        assert await again.sender.deliver(tenant, record.job_id) is None
        await claim_survives_a_kill(again, nc, hook, tenant)
    finally:
        await again.stop()


async def claim_survives_a_kill(intake: Intake, nc: Client, hook: Receiver, tenant: str) -> None:
    assert len(hook.got) == 1

    # A claim left by a sender killed mid-POST: another waits it out, then sends (once).
    other = ended(tenant, JobStatus.COMPLETED, hook.url)
    await seed_record(nc, other)
    now = datetime.now(UTC)

    def killed_mid_post(current: Deliveries | None) -> Deliveries:
        state = start(current, other, {"job": hook.url})
        return state.model_copy(update={"targets": {"job": claim(state.targets["job"], now)}})

    await intake.store.change(tenant, other.job_id, killed_mid_post)
    later = Sender(intake.sender.jobs, intake.store, allow_private=True, schedule=fast,
                   clock=lambda: now + timedelta(seconds=1))  # fmt: skip
    wait = await later.deliver(tenant, other.job_id)
    assert wait is not None
    assert 0 < wait <= CLAIM_SECONDS
    assert len(hook.got) == 1  # not sent while the claim may be live
    expired = Sender(intake.sender.jobs, intake.store, allow_private=True, schedule=fast,
                     clock=lambda: now + timedelta(seconds=CLAIM_SECONDS + 1))  # fmt: skip
    try:
        assert await expired.deliver(tenant, other.job_id) is None
    finally:
        await later.close()
        await expired.close()
    assert len(hook.got) == 2
    assert hook.got[1][0]["webhook-id"] == webhook_id(other.job_id, "completed")
    state = await intake.store.deliveries(tenant, other.job_id)
    assert state is not None
    assert state.targets["job"].attempts == 2


class FixedResolver(AbstractResolver):
    """A DNS that answers every name with one address (a rebinding attacker's)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=self.address, port=port, family=socket.AF_INET,
                          proto=0, flags=0)
        ]  # fmt: skip

    async def close(self) -> None:
        return None


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(
    intake: Intake, nc: Client, receivers: list[Receiver]
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await intake.store.set_endpoint(tenant, Endpoint(secret=SECRET, updated_at=datetime.now(UTC)))
    hook = await receiver(receivers)
    record = ended(tenant, JobStatus.COMPLETED, f"http://hooks.example.com:{hook.port}/hook")
    await seed_record(nc, record)
    strict = Sender(intake.sender.jobs, intake.store, allow_private=False, schedule=fast,
                    resolver=FixedResolver(LOOPBACK))  # fmt: skip
    lenient = Sender(intake.sender.jobs, intake.store, allow_private=True, schedule=fast,
                     resolver=FixedResolver(LOOPBACK))  # fmt: skip
    try:
        assert await strict.deliver(tenant, record.job_id) == 0.5
        state = await intake.store.deliveries(tenant, record.job_id)
        assert state is not None
        assert "private, loopback or link-local" in (state.targets["job"].last_error or "")
        assert hook.got == []
        # The same name is delivered where the deployment allows private addresses.
        lenient_clock = datetime.now(UTC) + timedelta(seconds=1)
        lenient.clock = lambda: lenient_clock
        assert await lenient.deliver(tenant, record.job_id) is None
        assert len(hook.got) == 1
    finally:
        await strict.close()
        await lenient.close()


def test_the_admin_cli_sets_shows_rotates_and_clears_a_tenants_endpoint(
    provisioned: str, admin_creds: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("CLIPLINE_NATS_URL", provisioned)
    monkeypatch.setenv("CLIPLINE_NATS_CREDS", admin_creds)
    tenant = f"t{uuid.uuid4().hex[:8]}"

    def run(*argv: str) -> str:
        assert cli_main(["webhooks", *argv]) == 0
        return capsys.readouterr().out

    made = run("set", tenant, "--url", "https://hooks.example.com/a")
    secret = made.splitlines()[0]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a secret standardwebhooks takes
    again = run("set", tenant, "--url", "https://hooks.example.com/b")
    assert "whsec_" not in again  # printed once: kept, not shown
    shown = json.loads(run("show", tenant))
    assert (shown["configured"], shown["url"]) == (True, "https://hooks.example.com/b")
    assert "whsec_" not in json.dumps(shown)
    rotated = run("rotate", tenant).splitlines()[0]
    assert rotated.startswith("whsec_")
    assert rotated != secret
    run("clear", tenant)
    assert json.loads(run("show", tenant)) == {"tenant": tenant, "configured": False}
    with pytest.raises(SystemExit, match="credentials"):
        cli_main(["webhooks", "set", tenant, "--url", "https://u:p@hooks.example.com/"])

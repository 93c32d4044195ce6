"""NATS identities against a real nats-server in operator mode (the session's, as `clipline up`
runs it): nobody connects without an identity, a tenant reaches only its own request subject and
events, a service only what shared.identities grants it, and a tenant's removal or revocation
takes effect on the running server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from clipline.auth import AuthDir, AuthError
from clipline.servers import NatsServer, start_secured_nats, stop_pid
from shared.contracts import BudgetAlertV1, JobAcceptedV1, JobCompletedV1, JobGeneratedV1
from shared.contracts.requests import request_subject
from shared.identities import SERVICES
from shared.streams import BUDGETS_BUCKET, JOBS_BUCKET, JOBS_STREAM_NAME, REQUESTS_STREAM_NAME

pytestmark = pytest.mark.integration
DEADLINE = 5.0


class Errors:
    """The asynchronous errors a connection got (permission violations arrive so)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.event = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        self.seen.append(str(exc).lower())
        self.event.set()

    def _has(self, subject: str) -> bool:
        return any("permissions violation" in e and subject.lower() in e for e in self.seen)

    async def violation(self, subject: str) -> None:
        """Wait (with a deadline) for a permissions violation naming `subject`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not self._has(subject):
            left = deadline - loop.time()
            assert left > 0, f"no permissions violation for {subject}: {self.seen}"
            self.event.clear()
            if self._has(subject):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout=left)


async def connect(
    url: str, creds: Path | str | None, errors: Errors | None = None, inbox: str = "_INBOX"
) -> Client:
    async def ignore(_: Exception) -> None:
        return None

    return await nats.connect(
        url,
        user_credentials=None if creds is None else str(creds),
        error_cb=errors.on_error if errors is not None else ignore,
        allow_reconnect=False,
        connect_timeout=3,
        inbox_prefix=inbox,
    )


@pytest.fixture
async def tenant(provisioned: str, nats_auth: AuthDir, tmp_path: Path) -> tuple[str, Path]:
    """A new tenant and a creds file of it."""
    name = f"t{uuid.uuid4().hex[:10]}"
    await nats_auth.add_tenant(provisioned, name)
    path = tmp_path / f"{name}.creds"
    path.write_text(nats_auth.tenant_creds(name))
    return name, path


async def stored(admin: Client, subject: str) -> bool:
    stream = REQUESTS_STREAM_NAME if subject.startswith("clipline.job.requested.") else None
    try:
        await admin.jetstream().get_last_msg(stream or JOBS_STREAM_NAME, subject)
    except NotFoundError:
        return False
    return True


async def test_a_connection_without_an_identity_is_refused(provisioned: str) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(provisioned, None)


async def test_a_forged_identity_is_refused(
    provisioned: str, nats_auth: AuthDir, tmp_path: Path
) -> None:
    """A creds file signed by a key that is not the tenant account's is refused."""
    stranger = AuthDir(tmp_path / "other").init()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(provisioned, stranger.creds_file("admin"))


async def test_a_tenant_publishes_its_own_request_and_follows_its_own_events(
    provisioned: str, tenant: tuple[str, Path], nc: Client
) -> None:
    name, creds = tenant
    errors = Errors()
    client = await connect(provisioned, creds, errors)
    try:
        got: asyncio.Queue[str] = asyncio.Queue()

        async def on(msg: object) -> None:
            got.put_nowait(msg.subject)  # type: ignore[attr-defined]

        await client.subscribe(f"clipline.job.*.v1.{name}.*", cb=on)
        await client.flush()
        # Its own request: stored, and the stream's acknowledgement comes back to it.
        ack = await client.request(request_subject(name), b"{}", timeout=DEADLINE)
        assert json.loads(ack.data)["stream"] == REQUESTS_STREAM_NAME
        # Its own events reach it (a JetStream publish is also delivered to core subscribers).
        mine = JobAcceptedV1.subject_filter(name, f"job_{uuid.uuid4().hex}")
        await nc.jetstream().publish(mine, b"{}")
        assert await asyncio.wait_for(got.get(), DEADLINE) == mine
        assert errors.seen == []
    finally:
        await client.close()


async def test_a_tenant_cannot_publish_another_tenants_request_or_any_event(
    provisioned: str, tenant: tuple[str, Path], nc: Client
) -> None:
    name, creds = tenant
    victim = f"v{uuid.uuid4().hex[:10]}"
    job = f"job_{uuid.uuid4().hex}"
    errors = Errors()
    client = await connect(provisioned, creds, errors)
    try:
        forged = [
            request_subject(victim),
            JobAcceptedV1.subject_filter(name, job),  # an internal kind, even of its own jobs
            JobGeneratedV1.subject_filter(victim, job),
            JobCompletedV1.subject_filter(name, job),
            f"$KV.{JOBS_BUCKET}.{name}.{job}",
        ]
        for subject in forged:
            await client.publish(subject, b"{}")
            await errors.violation(subject)
        for subject in forged[:4]:
            assert not await stored(nc, subject), subject
    finally:
        await client.close()


async def test_a_tenant_cannot_have_the_stream_write_its_ack_into_another_subject(
    provisioned: str, tenant: tuple[str, Path], nc: Client
) -> None:
    """Naming one of clipline's subjects as the reply of its request: in its own account the
    reply is its own subject, so the stream's acknowledgement never lands in clipline's."""
    name, creds = tenant
    target = JobGeneratedV1.subject_filter(f"v{uuid.uuid4().hex[:10]}", f"job_{uuid.uuid4().hex}")
    client = await connect(provisioned, creds)
    try:
        await client.publish(request_subject(name), b"{}", reply=target)
        await client.flush()
        # The request itself is stored (its own subject); wait for it, then look at the target.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not await stored(nc, request_subject(name)):
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
        assert not await stored(nc, target)
    finally:
        await client.close()


async def test_a_tenant_cannot_receive_another_tenants_events(
    provisioned: str, tenant: tuple[str, Path], nc: Client
) -> None:
    _, creds = tenant
    victim = f"v{uuid.uuid4().hex[:10]}"
    errors = Errors()
    client = await connect(provisioned, creds, errors)
    try:
        got: list[str] = []

        async def on(msg: object) -> None:
            got.append(msg.subject)  # type: ignore[attr-defined]

        for pattern in (f"clipline.job.*.v1.{victim}.*", "clipline.job.>", ">"):
            await client.subscribe(pattern, cb=on)
            await errors.violation(pattern)
        await nc.jetstream().publish(
            JobCompletedV1.subject_filter(victim, f"job_{uuid.uuid4().hex}"), b"{}"
        )
        await client.flush()
        await nc.flush()
        assert got == []
    finally:
        await client.close()


@pytest.mark.parametrize(
    "api",
    [
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{JOBS_STREAM_NAME}",
        f"$JS.API.STREAM.DELETE.{JOBS_STREAM_NAME}",
        f"$JS.API.DIRECT.GET.KV_{JOBS_BUCKET}",
    ],
)
async def test_a_tenant_cannot_call_the_jetstream_api(
    provisioned: str, tenant: tuple[str, Path], nc: Client, api: str
) -> None:
    _, creds = tenant
    errors = Errors()
    client = await connect(provisioned, creds, errors)
    try:
        await client.publish(api, b"", reply=client.new_inbox())
        await errors.violation(api)
        assert (await nc.jetstream().stream_info(JOBS_STREAM_NAME)).config.name == JOBS_STREAM_NAME
    finally:
        await client.close()


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_a_service_cannot_delete_or_purge_streams_or_buckets(
    provisioned: str, nats_auth: AuthDir, nc: Client, service: str
) -> None:
    identity = SERVICES[service]
    errors = Errors()
    client = await connect(
        provisioned, nats_auth.creds_file(service), errors, identity.inbox_prefix
    )
    try:
        js = client.jetstream(timeout=0.5)
        attempts: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (f"STREAM.DELETE.{JOBS_STREAM_NAME}", lambda: js.delete_stream(JOBS_STREAM_NAME)),
            (f"STREAM.PURGE.{JOBS_STREAM_NAME}", lambda: js.purge_stream(JOBS_STREAM_NAME)),
            (f"STREAM.DELETE.KV_{JOBS_BUCKET}", lambda: js.delete_key_value(JOBS_BUCKET)),
            (f"STREAM.CREATE.{service}", lambda: js.add_stream(name=service, subjects=["x.>"])),
        ]
        for api, attempt in attempts:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await attempt()
            await errors.violation(f"$js.api.{api}")
        info = await nc.jetstream().stream_info(JOBS_STREAM_NAME)
        assert info.config.name == JOBS_STREAM_NAME
        assert await nc.jetstream().key_value(JOBS_BUCKET)
    finally:
        await client.close()


async def test_a_service_publishes_only_what_it_emits_and_reads_only_its_buckets(
    provisioned: str, nats_auth: AuthDir, nc: Client
) -> None:
    """The storage identity may emit `completed`, not `admitted`; may not touch budgets."""
    errors = Errors()
    client = await connect(
        provisioned, nats_auth.creds_file("storage"), errors, SERVICES["storage"].inbox_prefix
    )
    try:
        job = f"job_{uuid.uuid4().hex}"
        allowed = JobCompletedV1.subject_filter("acme", job)
        await client.publish(allowed, b"{}")
        for subject in (
            "clipline.job.admitted.v1.acme." + job,
            request_subject("acme"),
            f"$KV.{BUDGETS_BUCKET}.limits",  # the catalog of every limit
            # reads are direct gets now: not of a bucket this identity does not read
            f"$JS.API.DIRECT.GET.KV_{BUDGETS_BUCKET}.$KV.{BUDGETS_BUCKET}.limits",
            f"$JS.ACK.{JOBS_STREAM_NAME}.submitter--job-admitted-v1.1.1.1.1.1",
        ):
            await client.publish(subject, b"{}")
            await errors.violation(subject)
        await client.subscribe("_INBOX.>")
        await errors.violation("_INBOX.>")
        assert await stored(nc, allowed)
    finally:
        await client.close()


async def test_removing_a_tenant_closes_its_connections_and_refuses_its_creds_at_once(
    provisioned: str, tenant: tuple[str, Path], nats_auth: AuthDir, nats_server: NatsServer
) -> None:
    name, creds = tenant
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    client = await nats.connect(
        provisioned, user_credentials=str(creds), closed_cb=on_closed, allow_reconnect=False
    )
    assert client.is_connected
    await nats_auth.remove_tenant(provisioned, name)
    await asyncio.wait_for(closed.wait(), DEADLINE)  # the server closed it: no restart
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(provisioned, creds)
    with pytest.raises(AuthError):
        nats_auth.tenant_creds(name)
    assert nats_server.proc.popen.poll() is None  # the same server process throughout


async def test_revoking_one_credential_leaves_the_tenants_others(
    provisioned: str, tenant: tuple[str, Path], nats_auth: AuthDir, tmp_path: Path
) -> None:
    name, first = tenant
    second = tmp_path / "second.creds"
    second.write_text(nats_auth.tenant_creds(name, "second"))
    users = nats_auth.tenant_users(name)
    revoked = next(pub for pub, u in users.items() if u["name"] == "second")
    assert await nats_auth.revoke_tenant_creds(provisioned, name, revoked) == 1
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(provisioned, second)
    kept = await connect(provisioned, first)
    await kept.close()


def test_creds_and_keys_are_private_files(nats_auth: AuthDir) -> None:
    assert nats_auth.path.stat().st_mode & 0o777 == 0o700
    for path in [nats_auth.path / "keys.json", nats_auth.server_config,
                 *nats_auth.path.glob("creds/*.creds")]:  # fmt: skip
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_tenant_names_are_checked(nats_auth: AuthDir) -> None:
    for bad in ("", "A", "a.b", "a*", "a>", "../x", "x" * 64):
        with pytest.raises(AuthError, match="invalid tenant"):
            asyncio.run(nats_auth.add_tenant("nats://127.0.0.1:1", bad))


def test_a_fresh_start_revokes_every_earlier_admin_and_service_credential(tmp_path: Path) -> None:
    """`clipline up` (and `clipline nats-auth init`) issue new admin, system and service creds
    and revoke the earlier ones: a leaked copy stops working at the next fresh start."""
    root = tmp_path / "nats"
    server, auth = start_secured_nats(root)
    try:
        leaked = {n: (tmp_path / f"{n}.creds") for n in ("admin", "storage")}
        for name, path in leaked.items():
            path.write_text(auth.creds_file(name).read_text())
        asyncio.run(_connects(server.url, leaked["admin"]))  # valid until the next start
    finally:
        stop_pid(server.proc.pid)
    # JetStream keeps the account's data under its key: the same server data, a fresh start
    server, auth = start_secured_nats(root)
    try:
        for path in leaked.values():
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                asyncio.run(_connects(server.url, path))
        asyncio.run(_connects(server.url, auth.creds_file("admin")))
        asyncio.run(_connects(server.url, auth.creds_file("storage")))
    finally:
        stop_pid(server.proc.pid)


async def _connects(url: str, creds: Path) -> None:
    client = await connect(url, creds)
    await client.close()


async def test_a_tenant_never_receives_budget_alerts(
    provisioned: str, tenant: tuple[str, Path], nc: Client
) -> None:
    """A budget alert names a window's spend (global or per model: every tenant's), so it is
    not among the events a tenant account imports, even on the tenant's own subject."""
    name, creds = tenant
    client = await connect(provisioned, creds)
    try:
        got: asyncio.Queue[str] = asyncio.Queue()

        async def on(msg: object) -> None:
            got.put_nowait(msg.subject)  # type: ignore[attr-defined]

        await client.subscribe(f"clipline.job.*.v1.{name}.*", cb=on)
        await client.flush()
        job = f"job_{uuid.uuid4().hex}"
        await nc.jetstream().publish(BudgetAlertV1.subject_filter(name, job), b"{}")
        after = JobAcceptedV1.subject_filter(name, job)
        await nc.jetstream().publish(after, b"{}")
        assert await asyncio.wait_for(got.get(), DEADLINE) == after  # the alert never came
    finally:
        await client.close()


async def test_a_tenants_message_id_cannot_suppress_an_event(
    provisioned: str, tenant: tuple[str, Path], nc: Client
) -> None:
    """Event ids derive from the job id; a tenant publishing first with such an id as its
    request's Nats-Msg-Id does not make the real event a duplicate (requests have a stream of
    their own, with its own dedup window)."""
    name, creds = tenant
    event_id = f"evt_{uuid.uuid4().hex}"
    client = await connect(provisioned, creds)
    try:
        first = await client.jetstream().publish(
            request_subject(name), b"{}", headers={"Nats-Msg-Id": event_id}
        )
        assert first.stream == REQUESTS_STREAM_NAME
    finally:
        await client.close()
    real = await nc.jetstream().publish(
        JobAcceptedV1.subject_filter(name, f"job_{uuid.uuid4().hex}"), b"{}",
        headers={"Nats-Msg-Id": event_id},
    )  # fmt: skip
    assert real.stream == JOBS_STREAM_NAME
    assert not real.duplicate

"""Session fixtures: real nats-server and SeaweedFS on free loopback ports, stopped by PID."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from clipline.auth import AuthDir
from clipline.servers import (
    NatsServer,
    S3Server,
    new_s3_key,
    start_seaweed,
    start_secured_nats,
    stop_pid,
)
from shared.contracts import JobRecordV1
from shared.streams import JOBS_BUCKET, ensure_jetstream


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats")
    server, _ = start_secured_nats(root)
    try:
        yield server
    finally:
        stop_pid(server.proc.pid)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3")
    server = start_seaweed(root / "data", root, *new_s3_key())  # a fresh key per session
    try:
        yield server
    finally:
        stop_pid(server.proc.pid)


@pytest.fixture(scope="session")
def nats_auth(nats_server: NatsServer) -> AuthDir:
    """The test server's identities (admin, system, one per service, tenants)."""
    assert nats_server.creds is not None
    return AuthDir(Path(nats_server.creds).parent.parent)


@pytest.fixture(scope="session")
def admin_creds(nats_server: NatsServer) -> str:
    """The admin identity's creds file: what a test connects with to set things up."""
    assert nats_server.creds is not None
    return nats_server.creds


@pytest.fixture(scope="session")
async def provisioned(nats_server: NatsServer, admin_creds: str) -> str:
    nc = await nats.connect(nats_server.url, user_credentials=admin_creds)
    try:
        await ensure_jetstream(nc.jetstream())
    finally:
        await nc.close()
    return nats_server.url


@pytest.fixture
async def nc(provisioned: str, admin_creds: str) -> AsyncIterator[Client]:
    client = await nats.connect(provisioned, user_credentials=admin_creds)
    try:
        yield client
    finally:
        await client.close()


async def seed_record(nc: Client, record: JobRecordV1) -> None:
    """Write a record straight into the jobs bucket (test set-up in any state; the store
    itself only creates `accepted` jobs and moves them by lifecycle steps)."""
    kv = await nc.jetstream().key_value(JOBS_BUCKET)
    await kv.put(record.key, record.model_dump_json().encode())


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent

"""Retention against a real S3 (the embedded SeaweedFS): the lifecycle rule written beside a
user's own rules, what the server is found to do with it, and the sweeper's deletes."""

import hashlib
import io
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from clipline.download import AssetGone, fetch
from clipline.servers import (
    S3Server,
    free_port,
    spawn,
    start_secured_nats,
    stop_pid,
    wait_until,
)
from services.storage.adapters import S3AssetStore, s3_http_client
from services.storage.domain import RETENTION_RULE_ID, object_key
from services.storage.ports import RetentionMode, StoreUnavailable
from services.storage.retention import retention_pass
from shared.contracts import AssetRef
from tests.integration.test_s3_store import client, closed_port

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def new_bucket(s3: S3Server) -> str:
    name = f"r-{uuid.uuid4().hex[:12]}"
    client(s3).make_bucket(name)
    return name


def put(c: Minio, bucket: str, key: str) -> None:
    c.put_object(bucket, key, io.BytesIO(b"x"), 1)


def names(c: Minio, bucket: str) -> set[str]:
    return {o.object_name or "" for o in c.list_objects(bucket, recursive=True)}


def rules(c: Minio, bucket: str) -> list[tuple[str | None, str | None, int | None]]:
    config = c.get_bucket_lifecycle(bucket)
    assert config is not None
    return [
        (
            r.rule_id,
            r.rule_filter.prefix if r.rule_filter else None,
            r.expiration.days if r.expiration else None,
        )
        for r in config.rules
    ]


def rule(rule_id: str, prefix: str, days: int) -> Rule:
    return Rule(ENABLED, Filter(prefix=prefix), rule_id, expiration=Expiration(days=days))


async def test_the_rule_replaces_ours_keeps_foreign_rules_and_seaweedfs_is_swept(
    s3_server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(s3_server)
    bucket = new_bucket(s3_server)
    c.set_bucket_lifecycle(
        bucket,
        LifecycleConfig([rule("logs", "logs/", 9), rule(RETENTION_RULE_ID, "", 90)]),
    )
    store = S3AssetStore(c, bucket, 5 * MiB, retention_days=7)
    with caplog.at_level(logging.INFO, logger="clipline.storage"):
        mode = await store.apply_retention()
    assert rules(c, bucket) == [("logs", "logs/", 9), (RETENTION_RULE_ID, "", 7)]
    # Observed with SeaweedFS 4.48 (`weed mini`): it takes and returns the rule, but says
    # nothing of it for an object (no x-amz-expiration), so storage sweeps.
    assert mode is RetentionMode.SWEEP
    assert store.retention is RetentionMode.SWEEP
    assert "does not say it expires objects by it" in caplog.text
    assert names(c, bucket) == set()  # the probe object is gone


async def test_a_bucket_without_rules_gets_only_ours(s3_server: S3Server) -> None:
    c = client(s3_server)
    bucket = new_bucket(s3_server)
    store = S3AssetStore(c, bucket, 5 * MiB, retention_days=30)
    await store.apply_retention()
    await store.apply_retention()  # again (another replica, a restart): still one rule
    assert rules(c, bucket) == [(RETENTION_RULE_ID, "", 30)]


async def test_the_sweep_deletes_what_is_due_and_leaves_the_rest(s3_server: S3Server) -> None:
    c = client(s3_server)
    bucket = new_bucket(s3_server)
    old = datetime(2026, 3, 12, 23, 30, tzinfo=UTC)  # due 20 March 00:00 with 7 days
    recent = datetime(2026, 3, 13, 0, 30, tzinfo=UTC)  # due 21 March
    variants = ("video", "thumbnail", "spritesheet")
    expired = {object_key("acme", "job_old", v, old) for v in variants}
    kept = {object_key("acme", "job_new", v, recent) for v in variants} | {
        "backups/2026/01/01/db/dump.sql",  # not clipline's layout: never swept
        "acme/2026/01/01/job_x/notes.txt",
        "notes.txt",
    }
    for key in expired | kept:
        put(c, bucket, key)
    store = S3AssetStore(c, bucket, 5 * MiB, retention_days=7)
    assert await store.sweep_expired(NOW) == 3
    assert names(c, bucket) == kept
    assert await store.sweep_expired(NOW) == 0  # idempotent: a second replica finds nothing


async def test_the_first_store_writes_the_rule_and_a_pass_sweeps(s3_server: S3Server) -> None:
    c = client(s3_server)
    bucket = f"r-{uuid.uuid4().hex[:12]}"
    store = S3AssetStore(c, bucket, 5 * MiB, retention_days=1)
    assert await store.apply_retention() is None  # no bucket yet: nothing made at start
    assert not c.bucket_exists(bucket)
    assert await retention_pass(store, NOW) is None

    async def one_chunk() -> AsyncIterator[bytes]:
        yield b"video bytes"

    old_key = object_key("acme", "job_1", "video", datetime(2026, 3, 1, tzinfo=UTC))
    await store.put_stream(old_key, one_chunk(), "video/mp4", {})
    assert store.retention is RetentionMode.SWEEP
    assert rules(c, bucket) == [(RETENTION_RULE_ID, "", 1)]
    assert await retention_pass(store, NOW) == 1
    assert names(c, bucket) == set()


async def test_s3_down_fails_a_sweep_as_unavailable_and_a_pass_carries_on() -> None:
    down = Minio(
        f"127.0.0.1:{closed_port()}", access_key="k", secret_key="s", secure=False,
        http_client=s3_http_client(connect_seconds=1, read_seconds=1),
    )  # fmt: skip
    store = S3AssetStore(down, "clipline-assets", 5 * MiB, retention_days=7)
    with pytest.raises(StoreUnavailable):
        await store.sweep_expired(NOW)
    with pytest.raises(StoreUnavailable):
        await store.apply_retention()
    assert await retention_pass(store, NOW) is None  # a warning, not a crash
    assert store.retention is None  # still to find out


def test_download_of_a_swept_object_says_it_is_gone(s3_server: S3Server, tmp_path: Path) -> None:
    c = client(s3_server)
    bucket = new_bucket(s3_server)
    key = object_key("acme", "job_1", "video", datetime(2026, 1, 1, tzinfo=UTC))
    put(c, bucket, key)
    ref = AssetRef(
        variant="video", bucket=bucket, key=key, size_bytes=1,
        sha256=hashlib.sha256(b"x").hexdigest(), content_type="video/mp4",
    )  # fmt: skip
    assert fetch(c, ref, tmp_path / "v.mp4").size_bytes == 1
    c.remove_object(bucket, key)  # as the sweeper or a lifecycle rule does
    with pytest.raises(AssetGone, match=r"is no longer in S3 \(NoSuchKey\).*RETENTION_DAYS"):
        fetch(c, ref, tmp_path / "w.mp4")
    assert not (tmp_path / "w.mp4").exists()


def test_the_storage_process_sweeps_soon_after_start_and_keeps_running(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """`python -m services.storage` with a retention: the task the runtime starts writes the
    rule and sweeps (SeaweedFS) within a period of the start. Its own NATS: no other test's
    events reach this storage."""
    c = client(s3_server)
    bucket = new_bucket(s3_server)
    old = object_key("acme", "job_old", "video", datetime(2020, 1, 1, tzinfo=UTC))
    kept = {object_key("acme", "job_new", "video", datetime.now(UTC)), "other/file.txt"}
    for key in {old} | kept:
        put(c, bucket, key)
    nats, auth = start_secured_nats(tmp_path / "nats")
    env = {
        "CLIPLINE_NATS_URL": nats.url,
        "CLIPLINE_NATS_CREDS": str(auth.creds_file("storage")),
        "CLIPLINE_HTTP_PORT": str(free_port()),
        "CLIPLINE_S3_ENDPOINT": s3_server.endpoint,
        "CLIPLINE_S3_ACCESS_KEY": s3_server.access_key,
        "CLIPLINE_S3_SECRET_KEY": s3_server.secret_key,
        "CLIPLINE_S3_BUCKET": bucket,
        "CLIPLINE_S3_RETENTION_DAYS": "3",
        "CLIPLINE_S3_RETENTION_SWEEP_SECONDS": "1",
    }
    log = tmp_path / "storage.log"
    proc = spawn("storage", [sys.executable, "-m", "services.storage"], log, env=env)
    try:
        swept = "storage: retention: deleted 1 expired object(s)"
        wait_until(lambda: swept in log.read_text(), "retention sweep", 30, proc)
        assert names(c, bucket) == kept
        assert rules(c, bucket) == [(RETENTION_RULE_ID, "", 3)]
        assert f"retention of 3 day(s) on bucket {bucket}: swept by storage" in log.read_text()
        assert proc.popen.poll() is None
    finally:
        stop_pid(proc.pid)
        stop_pid(nats.proc.pid)

"""Retention decisions (pure): which objects are due, which lifecycle rules to write, whether
the server says it applies ours, when to look again; and the setting's validation."""

import asyncio
import logging
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest
from minio.commonconfig import ENABLED, Filter
from minio.error import S3Error
from minio.helpers import ObjectWriteResult
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule
from urllib3 import HTTPHeaderDict

from services.storage.adapters import S3AssetStore
from services.storage.domain import (
    RETENTION_RULE_ID,
    RuleView,
    expires_by_rule,
    key_day,
    object_key,
    retention_due,
    retention_rule_held,
    sweep_delay,
    with_retention_rule,
)
from services.storage.ports import RetentionMode, StoreUnavailable
from services.storage.retention import retention_pass, retention_task
from shared.config import ConfigError, S3Settings, load_settings

ACCEPTED = datetime(2026, 3, 10, 23, 59, tzinfo=UTC)
VIDEO = object_key("acme", "job_abc", "video", ACCEPTED)


def test_key_day_reads_the_day_of_clipline_keys_only() -> None:
    assert VIDEO == "acme/2026/03/10/job_abc/video.mp4"
    assert key_day(VIDEO) == date(2026, 3, 10)
    assert key_day(object_key("acme", "job_abc", "spritesheet", ACCEPTED)) == date(2026, 3, 10)
    for other in [
        "acme/2026/03/10/job_abc/video.webp",  # a variant with another variant's extension
        "acme/2026/03/10/job_abc/notes.txt",  # not a variant
        "acme/2026/02/30/job_abc/video.mp4",  # no such day
        "acme/2026/3/10/job_abc/video.mp4",
        "acme/2026/03/10/video.mp4",  # no job
        "acme/x/2026/03/10/job_abc/video.mp4",
        "backups/2026/03/10/db/dump.sql",
        "Acme/2026/03/10/job_abc/video.mp4",  # not a tenant of clipline (upper case)
        ".clipline/retention-probe/abc",
        "",
    ]:
        assert key_day(other) is None, other


def test_an_object_is_due_once_its_day_plus_the_retention_has_passed() -> None:
    # Accepted on 10 March: kept 30 whole days after that day, deleted from 10 April 00:00 UTC
    # (what an S3 lifecycle rule of 30 days does with an object written on 10 March).
    assert not retention_due(VIDEO, 30, datetime(2026, 4, 9, 23, 59, 59, tzinfo=UTC))
    assert retention_due(VIDEO, 30, datetime(2026, 4, 10, 0, 0, tzinfo=UTC))
    assert retention_due(VIDEO, 1, datetime(2026, 3, 12, tzinfo=UTC))
    assert not retention_due(VIDEO, 1, datetime(2026, 3, 11, 12, tzinfo=UTC))


def test_nothing_is_due_without_retention_or_outside_the_layout() -> None:
    long_after = datetime(2036, 1, 1, tzinfo=UTC)
    assert not retention_due(VIDEO, 0, long_after)
    assert not retention_due("backups/2020/01/01/db/dump.sql", 1, long_after)
    assert not retention_due("acme/2020/01/01/job_1/readme.txt", 1, long_after)


def _id(rule: tuple[str | None, str]) -> str | None:
    return rule[0]


def test_our_rule_replaces_only_our_earlier_rule_in_its_place() -> None:
    rules = [("logs", "a"), (RETENTION_RULE_ID, "30 days"), (None, "b"), ("tmp", "c")]
    ours = (RETENTION_RULE_ID, "7 days")
    assert with_retention_rule(rules, ours, _id) == [
        ("logs", "a"), ours, (None, "b"), ("tmp", "c"),
    ]  # fmt: skip


def test_our_rule_is_added_after_foreign_rules_and_duplicates_of_ours_go() -> None:
    ours = (RETENTION_RULE_ID, "7 days")
    assert with_retention_rule([], ours, _id) == [ours]
    assert with_retention_rule([("logs", "a")], ours, _id) == [("logs", "a"), ours]
    twice = [(RETENTION_RULE_ID, "1"), ("logs", "a"), (RETENTION_RULE_ID, "2")]
    assert with_retention_rule(twice, ours, _id) == [ours, ("logs", "a")]


def test_the_rule_is_held_only_as_written() -> None:
    ours = RuleView(RETENTION_RULE_ID, True, "", 30)
    assert retention_rule_held([RuleView("logs", True, "logs/", 1), ours], 30)
    assert retention_rule_held([RuleView(RETENTION_RULE_ID, True, None, 30)], 30)
    assert not retention_rule_held([ours], 7)  # another retention
    assert not retention_rule_held([RuleView(RETENTION_RULE_ID, False, "", 30)], 30)
    assert not retention_rule_held([RuleView(RETENTION_RULE_ID, True, "acme/", 30)], 30)
    assert not retention_rule_held([RuleView("", True, "", 30)], 30)  # ID not kept
    assert not retention_rule_held([], 30)


def test_expiration_header_must_name_our_rule() -> None:
    header = 'expiry-date="Fri, 10 Apr 2026 00:00:00 GMT", rule-id="clipline-retention"'
    assert expires_by_rule(header)
    assert expires_by_rule(
        'expiry-date="Fri, 10 Apr 2026 00:00:00 GMT", rule-id="clipline%2Dretention"'
    )
    assert not expires_by_rule('expiry-date="Fri, 10 Apr 2026 00:00:00 GMT", rule-id="logs"')
    assert not expires_by_rule(None)
    assert not expires_by_rule("")


def test_first_pass_is_soon_and_later_ones_are_jittered_around_the_period() -> None:
    assert sweep_delay(3600, 0.0, first=True) == 0.0
    assert sweep_delay(3600, 0.999, first=True) < 60
    assert sweep_delay(10, 0.5, first=True) == 5  # never later than one period
    later = [sweep_delay(3600, f, first=False) for f in (0.0, 0.5, 0.999)]
    assert later[0] == pytest.approx(3240)
    assert later[1] == pytest.approx(3600)
    assert 3959 < later[2] < 3960


@pytest.fixture(autouse=True)
def _s3_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3Settings has no built-in key: these tests give one."""
    monkeypatch.setenv("CLIPLINE_S3_ACCESS_KEY", "test-access")
    monkeypatch.setenv("CLIPLINE_S3_SECRET_KEY", "test-secret")


def test_retention_defaults_to_keep_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPLINE_S3_RETENTION_DAYS", raising=False)
    assert load_settings(S3Settings).retention_days == 0
    monkeypatch.setenv("CLIPLINE_S3_RETENTION_DAYS", "30")
    assert load_settings(S3Settings).retention_days == 30


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "CLIPLINE_S3_RETENTION_DAYS: Input should be greater than or equal to 0"),
        ("1.5", "CLIPLINE_S3_RETENTION_DAYS: Input should be a valid integer"),
        ("thirty", "CLIPLINE_S3_RETENTION_DAYS: Input should be a valid integer"),
    ],
)
def test_bad_retention_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("CLIPLINE_S3_RETENTION_DAYS", value)
    with pytest.raises(ConfigError, match=message):
        load_settings(S3Settings)


def test_bad_sweep_period_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_S3_RETENTION_SWEEP_SECONDS", "0")
    with pytest.raises(ConfigError, match="CLIPLINE_S3_RETENTION_SWEEP_SECONDS"):
        load_settings(S3Settings)


def test_storage_exits_cleanly_on_a_negative_retention() -> None:
    env = {
        "CLIPLINE_S3_RETENTION_DAYS": "-3",
        "CLIPLINE_S3_ACCESS_KEY": "k",
        "CLIPLINE_S3_SECRET_KEY": "s",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "services.storage"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "configuration error: CLIPLINE_S3_RETENTION_DAYS" in out.stderr


class FakeRetentionStore:
    """Answers like the S3 store would: a mode to find out, then sweeps (or S3 is down)."""

    def __init__(self, mode: RetentionMode | None, *, down: bool = False) -> None:
        self.mode = mode
        self.down = down
        self.retention: RetentionMode | None = None
        self.applied = 0
        self.sweeps: list[datetime] = []
        self.swept = asyncio.Event()

    async def apply_retention(self) -> RetentionMode | None:
        self.applied += 1
        if self.down:
            raise StoreUnavailable("S3 unreachable: ConnectionRefusedError")
        self.retention = self.mode
        return self.mode

    async def sweep_expired(self, now: datetime) -> int:
        self.sweeps.append(now)
        self.swept.set()
        return 2


NOW = datetime(2026, 5, 1, tzinfo=UTC)


async def test_a_pass_sweeps_only_where_the_server_does_not_expire() -> None:
    sweeping = FakeRetentionStore(RetentionMode.SWEEP)
    assert await retention_pass(sweeping, NOW) == 2
    assert await retention_pass(sweeping, NOW) == 2
    assert sweeping.applied == 1  # found out once
    assert sweeping.sweeps == [NOW, NOW]
    expiring = FakeRetentionStore(RetentionMode.LIFECYCLE)
    assert await retention_pass(expiring, NOW) is None
    assert expiring.sweeps == []
    no_bucket = FakeRetentionStore(None)
    assert await retention_pass(no_bucket, NOW) is None
    assert await retention_pass(no_bucket, NOW) is None
    assert no_bucket.applied == 2  # asked again: the bucket may exist by now


async def test_s3_down_is_a_warning_and_the_next_pass_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeRetentionStore(RetentionMode.SWEEP, down=True)
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        assert await retention_pass(store, NOW) is None
    assert "S3 unreachable" in caplog.text
    store.down = False
    assert await retention_pass(store, NOW) == 2


async def test_any_other_failure_is_a_warning_too(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeRetentionStore(RetentionMode.SWEEP)

    async def broken(now: datetime) -> int:
        raise RuntimeError("listing broke")

    store.sweep_expired = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        assert await retention_pass(store, NOW) is None
    assert "retention pass failed: RuntimeError: listing broke" in caplog.text


async def test_the_task_runs_a_first_pass_soon_after_start_with_its_clock() -> None:
    store = FakeRetentionStore(RetentionMode.SWEEP)
    async with retention_task(store, 3600, clock=lambda: NOW, fraction=lambda: 0.0):
        await asyncio.wait_for(store.swept.wait(), 10)
    assert store.sweeps == [NOW]  # the next pass is an hour away: stopped before it


async def test_leaving_the_task_stops_it_before_its_first_pass() -> None:
    store = FakeRetentionStore(RetentionMode.SWEEP)
    async with retention_task(store, 3600, clock=lambda: NOW, fraction=lambda: 0.99):
        pass
    assert store.applied == 0
    assert store.sweeps == []


class LifecycleS3:
    """A stand-in of the minio client for the lifecycle calls: a server that refuses the rule
    (`refuse`), or one that applies it and says so on a PUT (`x-amz-expiration`, like MinIO)."""

    def __init__(self, *, refuse: str | None = None, expiration: str | None = None) -> None:
        self.refuse = refuse
        self.expiration = expiration
        self.config: LifecycleConfig | None = LifecycleConfig(
            [Rule(ENABLED, Filter(prefix="logs/"), "logs", expiration=Expiration(days=9))]
        )
        self.objects: set[str] = set()

    def bucket_exists(self, bucket: str) -> bool:
        return True

    def get_bucket_lifecycle(self, bucket: str) -> LifecycleConfig | None:
        return self.config

    def set_bucket_lifecycle(self, bucket: str, config: LifecycleConfig) -> None:
        if self.refuse:
            raise S3Error(None, self.refuse, "not here", f"/{bucket}", "r", "h")  # type: ignore[arg-type]
        self.config = config

    def put_object(self, bucket: str, key: str, data: object, length: int) -> ObjectWriteResult:
        self.objects.add(key)
        headers = HTTPHeaderDict()
        if self.expiration:
            headers["x-amz-expiration"] = self.expiration
        return ObjectWriteResult(bucket, key, None, "etag", headers)

    def remove_object(self, bucket: str, key: str) -> None:
        self.objects.discard(key)


async def test_a_server_that_names_our_rule_on_an_object_expires_by_lifecycle() -> None:
    fake = LifecycleS3(
        expiration='expiry-date="Sat, 04 Apr 2026 00:00:00 GMT", rule-id="clipline-retention"'
    )
    store = S3AssetStore(fake, "b", 5 * 1024 * 1024, retention_days=3)  # type: ignore[arg-type]
    assert await store.apply_retention() is RetentionMode.LIFECYCLE
    assert fake.config is not None
    written = [(r.rule_id, r.expiration.days if r.expiration else None) for r in fake.config.rules]
    assert written == [("logs", 9), (RETENTION_RULE_ID, 3)]
    assert fake.objects == set()  # the probe is deleted
    assert await retention_pass(store, NOW) is None  # nothing to sweep: S3 expires


@pytest.mark.parametrize("code", ["NotImplemented", "AccessDenied", "MalformedXML"])
async def test_a_server_refusing_the_rule_is_swept(
    code: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = LifecycleS3(refuse=code)
    store = S3AssetStore(fake, "b", 5 * 1024 * 1024, retention_days=3)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        assert await store.apply_retention() is RetentionMode.SWEEP
    assert f"S3 refused the lifecycle rule ({code})" in caplog.text


async def test_a_busy_server_is_unavailable_not_unsupported() -> None:
    fake = LifecycleS3(refuse="SlowDown")
    store = S3AssetStore(fake, "b", 5 * 1024 * 1024, retention_days=3)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await store.apply_retention()
    assert store.retention is None


async def test_a_server_that_drops_the_rule_silently_is_swept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Forgetful(LifecycleS3):
        def set_bucket_lifecycle(self, bucket: str, config: LifecycleConfig) -> None:
            pass  # answers 200, keeps nothing

    fake = Forgetful(expiration='expiry-date="x", rule-id="clipline-retention"')
    store = S3AssetStore(fake, "b", 5 * 1024 * 1024, retention_days=3)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        assert await store.apply_retention() is RetentionMode.SWEEP
    assert "accepted the lifecycle rule but does not return it" in caplog.text


async def test_a_probe_s3_refuses_is_swept_not_retried_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NoProbe(LifecycleS3):  # holds the rule, but refuses the probe object's PUT
        def put_object(self, bucket: str, key: str, data: object, length: int) -> ObjectWriteResult:
            raise S3Error(None, "AccessDenied", "no", f"/{bucket}", "r", "h")  # type: ignore[arg-type]

    store = S3AssetStore(NoProbe(), "b", 5 * 1024 * 1024, retention_days=3)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="clipline.storage"):
        assert await store.apply_retention() is RetentionMode.SWEEP
    assert "cannot probe the lifecycle rule (AccessDenied)" in caplog.text

"""Pure decisions of pricing_guard, submitter, poller and storage."""

import hashlib
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from services.poller.domain import (
    Failed,
    Generated,
    Pending,
    PollPolicy,
    Seen,
    TimedOut,
    assess,
    overdue,
    produced_seconds,
)
from services.pricing_guard.domain import Admitted, Refused, price
from services.storage.domain import (
    AssetsExpired,
    JobFacts,
    WaitForStore,
    expires,
    length_problem,
    object_key,
    object_metadata,
    outage,
    still_stored,
    timings,
)
from services.submitter.domain import (
    Expired,
    Reconcile,
    Resend,
    Skip,
    Submit,
    plan,
    rate_limit_delay,
)
from shared.registry import load_registry

REG = load_registry().provider("simulator")
TODAY = date(2026, 12, 2)
POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3600.0)


@pytest.mark.parametrize(
    ("model", "size", "seconds", "cost"),
    [
        ("sora-2", "1280x720", 4, 400_000),
        ("sora-2", "720x1280", 12, 1_200_000),
        ("sora-2-pro", "1280x720", 8, 2_400_000),
        ("sora-2-pro", "1792x1024", 20, 10_000_000),
    ],
)
def test_price_is_integer_micros(model: str, size: str, seconds: int, cost: int) -> None:
    assert price(REG, model, size, seconds, TODAY) == Admitted(cost)


def test_unpriced_is_refused_never_free() -> None:
    refused = price(REG, "sora-2-pro", "1920x1080", 4, TODAY)
    assert isinstance(refused, Refused)
    assert refused.reason == "unpriced"


def test_submit_plan() -> None:
    kw: dict[str, Any] = {"waited": 10.0, "deadline": 60.0}
    assert plan("admitted", None, False, **kw) == Submit()
    assert plan("submitted", "video_1", False, **kw) == Resend("video_1")
    # Picked up by the poller already: announcing "submitted" again would re-run polling.
    assert plan("generating", "video_1", False, **kw) == Resend("video_1")  # announced again
    assert plan("failed", None, True, **kw) == Skip()
    assert plan(None, None, False, **kw) == Skip()
    assert plan("accepted", None, False, **kw) == Skip()
    expired = plan("admitted", None, False, waited=61.0, deadline=60.0)
    assert isinstance(expired, Expired)


def test_submit_plan_for_a_create_that_may_be_in_flight() -> None:
    kw: dict[str, Any] = {"waited": 10.0, "deadline": 60.0}
    # `submitting` without an upstream id: the create may have reached the upstream
    # (reconciliation itself: tests/unit/test_submitter_reconcile.py)
    assert plan("submitting", None, False, **kw) == Reconcile()
    assert isinstance(plan("submitting", None, False, waited=61.0, deadline=60.0), Expired)
    assert plan("storing", "video_1", False, **kw) == Resend("video_1")
    assert plan("timed_out", None, True, **kw) == Skip()


def test_rate_limit_delay_is_bounded() -> None:
    assert rate_limit_delay(None) == 1.0
    assert rate_limit_delay(2.5) == 2.5
    assert rate_limit_delay(10_000) == 120.0


def test_overdue_and_clamp() -> None:
    assert overdue(POLICY, 3600.0) is None
    late = overdue(POLICY, 3600.5)
    assert isinstance(late, TimedOut)  # not a failure: the upstream job may still finish
    assert late.reason == "upstream_timeout"
    assert POLICY.clamp(86_400.0) == 30.0
    assert POLICY.clamp(None) == 5.0


NOW = 1_800_000_000.0


def judge(seen: Seen, *, waited: float = 10.0, hint: float | None = None) -> object:
    return assess(POLICY, seen, waited=waited, now=NOW, server_hint=hint)


def test_assess_outcomes() -> None:
    assert judge(Seen("queued")) == Pending(0)
    assert judge(Seen("in_progress", 40), hint=1.0) == Pending(40, 1.0, "in_progress")
    assert judge(Seen("completed", 100)) == Generated()
    failed = judge(Seen("failed", error=("moderation_blocked", "blocked")))
    assert failed == Failed("moderation_blocked", "blocked")
    weird = judge(Seen("archived"))
    assert isinstance(weird, Failed)
    assert weird.reason == "upstream_protocol"
    late = judge(Seen("in_progress", 5), waited=3601, hint=1)
    assert isinstance(late, TimedOut)
    assert late.reason == "upstream_timeout"
    # an outcome upstream reached is taken even past the deadline
    assert judge(Seen("completed", 100), waited=9e9) == Generated()


def test_a_video_whose_assets_expired_is_a_failure_with_reason() -> None:
    gone = judge(Seen("completed", 100, created_at=10, completed_at=70, expires_at=int(NOW)))
    assert isinstance(gone, Failed)
    assert gone.reason == "asset_expired"
    fresh = judge(Seen("completed", 100, created_at=10, completed_at=70, expires_at=int(NOW) + 1))
    # how long it took, by the upstream's clock, and when its assets expire
    assert fresh == Generated(None, 60.0, int(NOW) + 1)
    expired = judge(Seen("expired"))
    assert isinstance(expired, Failed)
    assert expired.reason == "asset_expired"
    cancelled = judge(Seen("cancelled"))
    assert isinstance(cancelled, Failed)
    assert cancelled.reason == "upstream_cancelled"


def test_generation_time_needs_both_stamps_in_order() -> None:
    assert judge(Seen("completed", created_at=10)) == Generated()
    assert judge(Seen("completed", created_at=10, completed_at=9)) == Generated()


@pytest.mark.parametrize(
    ("seconds", "produced"),
    [("8", 8), (" 4 ", 4), (None, None), ("", None), ("0", None), ("-4", None), ("4.5", None),
     ("abc", None), ("99999", None)],
)  # fmt: skip
def test_what_the_upstream_produced_is_read_strictly(
    seconds: str | None, produced: int | None
) -> None:
    assert produced_seconds(seconds) == produced
    assert judge(Seen("completed", 100, seconds=seconds)) == Generated(produced)


def test_object_keys_are_per_tenant_day_and_job() -> None:
    day = datetime(2026, 3, 7, 23, 59, tzinfo=UTC)
    assert object_key("acme", "job_1", "video", day) == "acme/2026/03/07/job_1/video.mp4"
    assert object_key("acme", "job_1", "thumbnail", day) == "acme/2026/03/07/job_1/thumbnail.webp"
    assert (
        object_key("acme", "job_1", "spritesheet", day) == "acme/2026/03/07/job_1/spritesheet.jpg"
    )


def test_object_key_day_is_the_utc_day() -> None:
    late_in_new_york = datetime(2026, 3, 7, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert object_key("acme", "job_1", "video", late_in_new_york).startswith("acme/2026/03/08/")
    naive = datetime(2026, 12, 31, 23, 0)  # records are UTC; a naive time is taken as UTC
    assert object_key("acme", "job_1", "video", naive).startswith("acme/2026/12/31/")


def test_object_metadata_names_the_job_and_hides_the_prompt() -> None:
    facts = JobFacts(
        job_id="job_1", tenant="acme", accepted_at=datetime(2026, 3, 7, tzinfo=UTC),
        model="sora-2", size="1280x720", seconds=8, prompt="a paper boat", cost_micros=800_000,
    )  # fmt: skip
    assert object_metadata(facts) == {
        "job-id": "job_1",
        "tenant": "acme",
        "model": "sora-2",
        "size": "1280x720",
        "seconds": "8",
        "prompt-sha256": hashlib.sha256(b"a paper boat").hexdigest(),
        "cost-micros": "800000",
    }


def test_length_is_verified_against_the_declared_length() -> None:
    assert length_problem(10, 10) is None
    assert length_problem(10, None) is None  # nothing declared: nothing to verify
    assert length_problem(7, 10) == "received 7 of 10 bytes"
    assert length_problem(11, 10) == "received 11 of 10 bytes"


def test_a_recorded_object_is_kept_only_while_it_is_still_that_object() -> None:
    assert still_stored(5, 5, {"job-id": "job_1"}, "job_1")
    assert not still_stored(5, None, {}, "job_1")  # gone
    assert not still_stored(5, 3, {"job-id": "job_1"}, "job_1")  # another size
    assert not still_stored(5, 5, {"job-id": "job_2"}, "job_1")  # another job's
    assert not still_stored(5, 5, {}, "job_1")  # no metadata: not written by this store


def test_s3_outage_waits_with_backoff_until_the_upstream_copy_expires() -> None:
    t0 = datetime(2026, 12, 2, 12, tzinfo=UTC)
    expires = t0 + timedelta(minutes=50)

    def wait(after: float, **kw: Any) -> WaitForStore | AssetsExpired:
        now = t0 + timedelta(seconds=after)
        return outage(
            now=now, storing_since=t0, **({"expires_at": expires, "generated_at": t0} | kw)
        )

    assert wait(0) == WaitForStore(1.0)  # the first wait
    assert wait(20) == WaitForStore(5.0)  # a quarter of how long it has been storing
    assert wait(600) == WaitForStore(30.0)  # capped
    assert wait(50 * 60 - 10) == WaitForStore(10.0)  # never past the expiry
    assert wait(50 * 60 - 0.01) == WaitForStore(0.1)
    gone = wait(50 * 60)
    assert isinstance(gone, AssetsExpired)
    assert "2026-12-02T12:50:00+00:00" in gone.detail
    # the upstream did not say: an hour after generation
    assert wait(3599, expires_at=None) == WaitForStore(1.0)
    assert isinstance(wait(3600, expires_at=None), AssetsExpired)
    # nor is generation known: wait as long as it lasts
    assert wait(9e6, expires_at=None, generated_at=None) == WaitForStore(30.0)


def test_assets_expire_when_the_upstream_said_else_an_hour_after_generation() -> None:
    generated_at = datetime(2026, 12, 2, 12, tzinfo=UTC)
    said = generated_at + timedelta(minutes=20)
    assert expires(said, generated_at) == said
    assert expires(said, None) == said
    assert expires(None, generated_at) == generated_at + timedelta(hours=1)
    assert expires(None, None) is None


def test_timings_from_history() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    history = {
        "accepted": t0,
        "submitted": t0 + timedelta(seconds=1),
        "generated": t0 + timedelta(seconds=11),
    }
    t = timings(history, t0 + timedelta(seconds=12.5))
    assert t.queue_seconds == 1.0
    assert t.generation_seconds == 10.0
    assert t.storage_seconds == 1.5
    assert t.total_seconds == 12.5

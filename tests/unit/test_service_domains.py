"""Pure decisions of pricing_guard, submitter, poller and storage."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.poller.domain import (
    Failed,
    Generated,
    Pending,
    PollPolicy,
    TimedOut,
    assess,
    next_poll_delay,
    overdue,
    produced_seconds,
)
from services.pricing_guard.domain import Admitted, Refused, price
from services.storage.domain import object_key, timings
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
    assert plan("generating", "video_1", False, **kw) == Skip()
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
    assert plan("storing", "video_1", False, **kw) == Skip()
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


def test_poll_delay_prefers_server_hint_within_bounds() -> None:
    assert next_poll_delay(POLICY, None) == 5.0
    assert next_poll_delay(POLICY, 1.0) == 1.0
    assert next_poll_delay(POLICY, 0.0) == 0.2
    assert next_poll_delay(POLICY, 600.0) == 30.0


def test_assess_outcomes() -> None:
    kw = {"error": None, "waited": 10.0, "server_hint": None}
    assert assess(POLICY, status="queued", progress=0, **kw) == Pending(0, 5.0)  # type: ignore[arg-type]
    going = assess(POLICY, status="in_progress", progress=40, **kw)  # type: ignore[arg-type]
    assert going == Pending(40, 5.0, "in_progress")
    assert assess(POLICY, status="completed", progress=100, **kw) == Generated()  # type: ignore[arg-type]
    failed = assess(
        POLICY, status="failed", progress=0, error=("moderation_blocked", "blocked"),
        waited=1.0, server_hint=None,
    )  # fmt: skip
    assert failed == Failed("moderation_blocked", "blocked")
    weird = assess(POLICY, status="expired", progress=0, **kw)  # type: ignore[arg-type]
    assert isinstance(weird, Failed)
    assert weird.reason == "upstream_protocol"
    late = assess(POLICY, status="in_progress", progress=5, error=None, waited=3601, server_hint=1)
    assert isinstance(late, TimedOut)
    assert late.reason == "upstream_timeout"
    # an outcome upstream reached is taken even past the deadline
    assert (
        assess(POLICY, status="completed", progress=100, error=None, waited=9e9, server_hint=None)
        == Generated()
    )


@pytest.mark.parametrize(
    ("seconds", "produced"),
    [("8", 8), (" 4 ", 4), (None, None), ("", None), ("0", None), ("-4", None), ("4.5", None),
     ("abc", None), ("99999", None)],
)  # fmt: skip
def test_what_the_upstream_produced_is_read_strictly(
    seconds: str | None, produced: int | None
) -> None:
    assert produced_seconds(seconds) == produced
    done = assess(POLICY, status="completed", progress=100, error=None, waited=1.0,
                  server_hint=None, seconds=seconds)  # fmt: skip
    assert done == Generated(produced)


def test_object_keys_are_per_tenant_and_job() -> None:
    assert object_key("acme", "job_1", "video") == "acme/job_1/video.mp4"
    assert object_key("acme", "job_1", "thumbnail") == "acme/job_1/thumbnail.webp"
    assert object_key("acme", "job_1", "spritesheet") == "acme/job_1/spritesheet.jpg"


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

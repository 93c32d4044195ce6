"""The poller's webhook decisions: signatures checked by the standardwebhooks library (forged,
stale, malformed refused), the event read from a verified body, the safety-net poll policy."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from standardwebhooks import Webhook

from services.poller.domain import (
    Malformed,
    PollPolicy,
    VideoEvent,
    video_event,
    with_webhooks,
)
from services.poller.schedule import after_look, first_look
from services.poller.settings import PollerSettings
from services.poller.webhooks import MAX_BODY_BYTES, Refused, Verified, verify
from shared.config import ConfigError, load_settings
from shared.telemetry import current_trace_id, in_job_trace
from tests.webhook_signing import OTHER_SECRET, SECRET, event_body, signed

VERIFIER = Webhook(SECRET)
VIDEO = "video_0123abcd"


def test_a_valid_webhook_is_verified_and_names_its_video() -> None:
    body = event_body(VIDEO)
    headers = signed(body, webhook_id="msg_1")
    verdict = verify(VERIFIER, body, headers)
    assert isinstance(verdict, Verified)
    assert verdict.webhook_id == "msg_1"
    assert verdict.event.video_id == VIDEO
    assert verdict.event.type == "video.completed"
    assert verdict.event.event_id == json.loads(body)["id"]


def test_a_webhook_signed_with_another_secret_is_forged() -> None:
    body = event_body(VIDEO)
    assert verify(VERIFIER, body, signed(body, secret=OTHER_SECRET)) == Refused(
        401, "invalid_signature", "No matching signature found"
    )


def test_a_body_changed_after_signing_is_forged() -> None:
    body = event_body(VIDEO)
    headers = signed(body)
    tampered = body.replace(VIDEO.encode(), b"video_someone_elses")
    verdict = verify(VERIFIER, tampered, headers)
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (401, "invalid_signature")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_refused(missing: str) -> None:
    body = event_body(VIDEO)
    headers = signed(body)
    del headers[missing]
    verdict = verify(VERIFIER, body, headers)
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (401, "invalid_signature")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("webhook-signature", "garbage-without-a-comma"),
        ("webhook-signature", "v1,not base64!!"),
        ("webhook-signature", "v2,AAAA"),
        ("webhook-timestamp", "nan"),
        ("webhook-timestamp", "yesterday"),
    ],
)
def test_malformed_headers_are_refused_not_crashed_on(header: str, value: str) -> None:
    body = event_body(VIDEO)
    headers = {**signed(body), header: value}
    verdict = verify(VERIFIER, body, headers)
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (401, "invalid_signature")


def test_a_body_that_is_not_utf8_is_unverifiable() -> None:
    body = b"\xff\xfe not text"
    headers = signed(b"placeholder")
    verdict = verify(VERIFIER, body, headers)
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (401, "invalid_signature")


@pytest.mark.parametrize(
    ("age", "detail"),
    [(timedelta(minutes=6), "too old"), (timedelta(minutes=-6), "too new")],
)
def test_a_correctly_signed_webhook_outside_the_tolerance_is_stale(
    age: timedelta, detail: str
) -> None:
    body = event_body(VIDEO)
    verdict = verify(VERIFIER, body, signed(body, age=age))
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (401, "stale")
    assert detail in verdict.detail


def test_within_the_tolerance_is_not_stale() -> None:
    body = event_body(VIDEO)
    assert isinstance(verify(VERIFIER, body, signed(body, age=timedelta(minutes=4))), Verified)


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"[1, 2, 3]",
        b'{"id": "evt_1", "type": "video.completed", "data": {}}',
        b'{"id": "evt_1", "type": "batch.completed", "data": {"id": "video_1"}}',
        b'{"type": "video.completed", "data": {"id": "video_1"}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_signed_body_that_is_no_video_event_is_malformed(body: bytes) -> None:
    verdict = verify(VERIFIER, body[:MAX_BODY_BYTES], signed(body[:MAX_BODY_BYTES]))
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (400, "malformed_event")


def test_an_oversize_body_is_refused_before_anything_else() -> None:
    body = b" " * (MAX_BODY_BYTES + 1)
    verdict = verify(VERIFIER, body, signed(body))
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (413, "too_large")


def test_video_event_reads_only_the_video_id() -> None:
    payload = {"id": "evt_1", "type": "video.failed", "data": {"id": "video_9", "status": "x"}}
    assert video_event(payload) == VideoEvent("evt_1", "video.failed", "video_9")
    assert isinstance(video_event({**payload, "data": {"id": "v" * 257}}), Malformed)
    assert isinstance(video_event({**payload, "data": "video_9"}), Malformed)


def test_with_webhooks_polls_are_a_safety_net_past_the_expected_completion() -> None:
    policy = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3600.0)
    safety = with_webhooks(policy, 60.0)
    assert safety.safety_delay == 60.0
    assert safety.deadline == policy.deadline
    # no look before 60 s past the expected completion (the webhook should come first) ...
    assert first_look(safety, waited=0.0, expected=100.0) == 160.0
    assert first_look(policy, waited=0.0, expected=100.0) == 100.0
    assert first_look(safety, waited=160.0, expected=100.0) is None
    # ... then one every safety interval (with jitter), whatever the upstream's short hint
    for hint in (None, 0.5):
        wait = after_look(safety, waited=160.0, expected=100.0, hint=hint, draw=0.5)
        assert wait == pytest.approx(60.0)


def test_webhook_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_WEBHOOK_SECRET", "")
    assert load_settings(PollerSettings).webhook() is None
    monkeypatch.setenv("CLIPLINE_WEBHOOK_SECRET", SECRET)
    settings = load_settings(PollerSettings)
    assert settings.webhook() is not None
    assert SECRET not in repr(settings)
    assert settings.poll_webhook_safety_seconds == 60.0
    monkeypatch.setenv("CLIPLINE_WEBHOOK_SECRET", "whsec_***not-base64***")
    with pytest.raises(ConfigError) as refused:
        load_settings(PollerSettings)
    assert "CLIPLINE_WEBHOOK_SECRET" in str(refused.value)
    assert "not-base64" not in str(refused.value)


@pytest.mark.parametrize(
    ("kept", "inside"),
    [
        ("322a00e7d2ba6b4f189ad8e8b262de1a", "322a00e7d2ba6b4f189ad8e8b262de1a"),
        ("not-hex-" * 4, None),
        (None, None),
    ],
)
def test_a_webhooks_work_runs_in_the_jobs_trace(kept: str | None, inside: str | None) -> None:
    with in_job_trace(kept, "poller webhook"):
        assert current_trace_id() == inside
    assert current_trace_id() is None

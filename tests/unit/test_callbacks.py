"""Caller webhooks' pure rules: which URLs, which addresses, the retry schedule, a target's
states (claimed, delivered, given up), and a payload that carries no credential."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest

from services.intake.callbacks import (
    CLAIM_SECONDS,
    GIVE_UP_AFTER_SECONDS,
    RETRY_SCHEDULE_SECONDS,
    Endpoint,
    TargetDelivery,
    claim,
    due,
    parse_schedule,
    payload,
    public,
    retry_wait,
    settle,
    settlement_wait,
    start,
    targets_of,
    url_problem,
    webhook_id,
)
from services.intake.domain import Invalid, Valid, validate
from services.intake.settings import IntakeSettings
from shared.contracts import JobRecordV1, JobSpec, JobStatus
from shared.contracts.events import AssetRef
from shared.registry import load_registry

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/a?b=c", "http://hooks.example.com:8080/", "https://8.8.8.8/x",
     "https://[2606:4700:4700::1111]/x"],
)  # fmt: skip
def test_public_http_urls_are_taken(url: str) -> None:
    assert url_problem(url, allow_private=False) is None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/", "http://127.1.2.3/", "http://10.0.0.1/", "http://192.168.1.1/",
     "http://172.16.0.1/", "http://169.254.169.254/", "http://[::1]/", "http://[fe80::1]/",
     "http://[fc00::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/",
     "http://localhost/", "http://api.localhost/", "http://224.0.0.1/"],
)  # fmt: skip
def test_private_loopback_and_link_local_addresses_are_refused_unless_allowed(url: str) -> None:
    assert "private, loopback or link-local" in (url_problem(url, allow_private=False) or "")
    assert url_problem(url, allow_private=True) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [("ftp://x.example.com/", "http(s)"), ("https:///path", "http(s)"),
     ("//x.example.com", "http(s)"), ("https://u:p@x.example.com/", "credentials"),
     ("https://u@x.example.com/", "credentials"),
     ("https://x.example.com/a b", "whitespace"), ("https://x.example.com:99999/", "valid URL"),
     ("https://x.example.com/" + "a" * 2048, "2048")],
)  # fmt: skip
def test_malformed_urls_say_why(url: str, says: str) -> None:
    assert says in (url_problem(url, allow_private=True) or "")


def test_an_ipv4_mapped_address_is_judged_as_ipv4() -> None:
    assert not public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert public(ipaddress.ip_address("::ffff:8.8.8.8"))


def test_the_schedule_backs_off_then_goes_hourly() -> None:
    assert [retry_wait(n) for n in range(1, 9)] == [30, 120, 300, 900, 1800, 3600, 3600, 3600]


def record(**fields: object) -> JobRecordV1:
    asset = AssetRef(
        variant="video", bucket="b", key="k", size_bytes=1, sha256="0" * 64,
        content_type="video/mp4", url="https://s3.example.com/k?X-Amz-Signature=s",
    )  # fmt: skip
    base: dict[str, object] = {
        "job_id": "job_" + "a" * 32, "tenant": "acme", "status": JobStatus.COMPLETED,
        "spec": JobSpec(model="sora-2", size="720x1280", seconds=4, prompt="p"),
        "idempotency_key": "k", "request_hash": "h", "cost_micros": 5,
        "history": {"completed": NOW}, "assets": [asset],
        "callback_url": "https://hooks.example.com/a",
    }  # fmt: skip
    return JobRecordV1.model_validate(base | fields)


def test_the_payload_names_the_end_and_carries_no_presigned_url() -> None:
    body = payload(record())
    assert body["type"] == "video.completed"
    assert body["timestamp"] == NOW.isoformat()
    assert "X-Amz-Signature" not in str(body)
    data = body["data"]
    assert isinstance(data, dict)
    assert (data["job_id"], data["status"], data["cost_micros"]) == (
        "job_" + "a" * 32,
        "completed",
        5,
    )


@pytest.mark.parametrize("status", ["completed", "failed", "timed_out", "cancelled"])
def test_a_settled_end_waits_for_its_charge_doubling_and_bounded(status: str) -> None:
    ended = record(status=JobStatus(status), history={status: NOW}, charged_micros=None)
    waits = [settlement_wait(ended, NOW + timedelta(seconds=s), bound=30) for s in
             (0, 0.1, 1, 3, 20, 27, 29.9)]  # fmt: skip
    assert waits[:4] == [0.25, 0.25, 1, 3]
    assert waits[4] == 5  # at most 5 s between two looks
    assert waits[5] == pytest.approx(3)  # never past the bound
    assert waits[6] == pytest.approx(0.1)
    assert settlement_wait(ended, NOW + timedelta(seconds=30), bound=30) is None  # sent null
    assert settlement_wait(ended, NOW - timedelta(seconds=5), bound=30) == 0.25  # a clock behind
    settled = ended.model_copy(update={"charged_micros": 0})
    assert settlement_wait(settled, NOW, bound=30) is None  # $0 is a charge too


def test_a_rejection_or_an_end_without_its_time_is_sent_at_once() -> None:
    rejected = record(status=JobStatus.REJECTED, history={"rejected": NOW}, reason="over_budget")
    assert settlement_wait(rejected, NOW) is None  # nothing reserved: nothing to settle
    assert settlement_wait(record(history={}), NOW) is None


def test_both_receivers_one_webhook_id_per_job_end() -> None:
    endpoint = Endpoint(secret="whsec_x", url="https://t.example.com/", updated_at=NOW)
    state = start(None, record(), targets_of(record(), endpoint))
    assert set(state.targets) == {"job", "tenant"}
    assert state.webhook_id == webhook_id("job_" + "a" * 32, "completed")
    assert webhook_id("job_" + "a" * 32, "failed") != state.webhook_id
    assert targets_of(record(callback_url=None), None) == {}


def test_a_claim_holds_a_target_then_lapses() -> None:
    target = claim(TargetDelivery(url="u"), NOW)
    assert (target.attempts, target.first_attempt_at) == (1, NOW)
    assert due(target, NOW + timedelta(seconds=1)) == CLAIM_SECONDS - 1
    assert due(target, NOW + timedelta(seconds=CLAIM_SECONDS)) == 0.0


def test_a_2xx_delivers_anything_else_retries_until_a_day_has_passed() -> None:
    first = claim(TargetDelivery(url="u"), NOW)
    failed = settle(first, NOW, 500, "HTTP 500", 30)
    assert (failed.state, failed.sending_since, failed.last_status) == ("pending", None, 500)
    assert due(failed, NOW) == 30
    assert due(failed, NOW + timedelta(seconds=31)) == 0.0
    ok = settle(claim(failed, NOW), NOW + timedelta(seconds=31), 204, None, 30)
    assert (ok.state, ok.attempts, [a.status for a in ok.timeline]) == ("delivered", 2, [500, 204])
    assert due(ok, NOW + timedelta(days=2)) is None
    late = NOW + timedelta(seconds=GIVE_UP_AFTER_SECONDS - 1800)
    given_up = settle(claim(failed, late), late, None, "refused", 3600)
    assert given_up.state == "given_up"
    assert due(given_up, late) is None
    redirected = settle(first, NOW, 302, "HTTP 302", 30)
    assert redirected.state == "pending"


def test_a_request_callback_url_is_read_and_part_of_its_fingerprint() -> None:
    provider = load_registry().provider("simulator")
    body = {"size": "1280x720", "prompt": "p"}
    plain = validate(body, "acme", provider)
    hooked = validate({**body, "callback_url": "https://h.example.com/"}, "acme", provider)
    assert isinstance(plain, Valid)
    assert isinstance(hooked, Valid)
    assert hooked.callback_url == "https://h.example.com/"
    assert plain.fingerprint != hooked.fingerprint
    assert plain.fingerprint == Valid("acme", plain.spec, None).fingerprint  # old ones hold
    too_long = validate(
        {**body, "callback_url": "https://h.example.com/" + "a" * 2048}, "acme", provider
    )
    assert isinstance(too_long, Invalid)
    assert (too_long.reason, too_long.field) == ("invalid_callback_url", "callback_url")


def test_a_retry_schedule_from_the_environment_is_checked_and_repeats_its_last_wait() -> None:
    schedule = parse_schedule("1,2.5,10")
    assert [retry_wait(n, schedule) for n in range(1, 6)] == [1, 2.5, 10, 10, 10]
    for bad in ["", "1,,2", "fast", "0", "-5", "90000"]:
        with pytest.raises(ValueError, match="seconds"):
            parse_schedule(bad)
    assert parse_schedule(IntakeSettings().callbacks_retry_seconds) == RETRY_SCHEDULE_SECONDS

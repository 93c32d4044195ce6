"""Caller webhooks, the pure part: URL checks, the retry schedule, the payload, delivery states."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from shared.contracts.jobs import JobRecordV1
from shared.contracts.requests import CALLBACK_URL_MAX_CHARS

RETRY_SCHEDULE_SECONDS: tuple[float, ...] = (30, 120, 300, 900, 1800, 3600)
"""Waits after the 1st..6th failed attempt; then the last again (hourly), until
GIVE_UP_AFTER_SECONDS. CLIPLINE_CALLBACKS_RETRY_SECONDS sets another."""
GIVE_UP_AFTER_SECONDS = 24 * 3600.0
"""No attempt starts later than this after the first: the target is then `given_up`."""
SEND_TIMEOUT_SECONDS = 15.0
CLAIM_SECONDS = SEND_TIMEOUT_SECONDS + 15.0
"""An attempt in flight (claimed in the KV) is another replica's for this long; after it, the
claim is taken to be lost (its process died) and the attempt is made again."""
TIMELINE_MAX = 40
"""Attempts kept per target (hourly for a day is about 30)."""
SETTLEMENT_WAIT_SECONDS = 30.0
"""How long after a job's end its first attempt waits for pricing_guard's settlement (the
record's `charged_micros`); past it the webhook goes with `charged_micros: null`."""
SETTLEMENT_POLL_SECONDS = (0.25, 5.0)
"""The bounds of the wait between two looks at an unsettled record (it doubles: the wait is
the time already waited, within these)."""
SETTLED_OUTCOMES = frozenset({"completed", "failed", "timed_out", "cancelled"})
"""The ends pricing_guard settles (services/pricing_guard/handlers.py): each gets a
`charged_micros` (0 for a job that ended before it was admitted); a rejection has nothing
reserved, so none."""
TENANT_KEY_PREFIX = "tenant"
JOB_KEY_PREFIX = "job"

Target = Literal["job", "tenant"]
TargetState = Literal["pending", "delivered", "given_up"]


def tenant_key(tenant: str) -> str:
    return f"{TENANT_KEY_PREFIX}.{tenant}"


def job_key(tenant: str, job_id: str) -> str:
    return f"{JOB_KEY_PREFIX}.{tenant}.{job_id}"


class Endpoint(BaseModel):
    """A tenant's webhook settings (written by `clipline webhooks`): the secret signs every
    webhook of the tenant's jobs (per-job URLs too); `url`, when set, receives them all."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    secret: str
    url: str | None = None
    updated_at: datetime


class Attempt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    at: datetime
    status: int | None = None
    """The receiver's HTTP status; None: no answer (refused, timed out, a private address)."""
    error: str | None = None


class TargetDelivery(BaseModel):
    """One receiver of one job's end: its attempts, and what came of them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str
    state: TargetState = "pending"
    attempts: int = 0
    first_attempt_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    sending_since: datetime | None = None
    """Set (by compare-and-set) just before a POST, cleared with its outcome: a claim."""
    delivered_at: datetime | None = None
    given_up_at: datetime | None = None
    timeline: list[Attempt] = []


class Deliveries(BaseModel):
    """The delivery state of one job's end (KV `job.<tenant>.<job_id>`): GET /v1/jobs/{id}
    shows it as `callbacks`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event: str
    webhook_id: str
    targets: dict[str, TargetDelivery] = {}


def webhook_id(job_id: str, event: str) -> str:
    """The `webhook-id` of a job's end: the same for every attempt and every receiver."""
    return "msg_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:32]


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why `url` cannot be a callback URL (None: it can). A host name is checked again at
    connect time, on the addresses it resolves to (callbacks_send.py)."""
    if len(url) > CALLBACK_URL_MAX_CHARS:
        return f"callback_url exceeds {CALLBACK_URL_MAX_CHARS} chars"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return "callback_url must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "callback_url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback_url must be an absolute http(s) URL"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return "callback_url must not carry credentials"
    if port == 0:
        return "callback_url names port 0"
    if not allow_private and address_refused(parts.hostname):
        return f"callback_url names a private, loopback or link-local address ({parts.hostname})"
    return None


def address_refused(host: str) -> bool:
    """True for a literal IP address (or `localhost`) that is not a public one: private,
    loopback, link-local, shared, reserved, multicast, unspecified. A host name: False here
    (resolved and checked at connect time)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return not public(ip)


def public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address (an IPv4-mapped IPv6 address is judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def settlement_wait(
    record: JobRecordV1, now: datetime, bound: float = SETTLEMENT_WAIT_SECONDS
) -> float | None:
    """Seconds to wait before the first attempt of a job's webhooks, for its charge to be
    settled on the record; None: send now (settled, never settled, or waited `bound` seconds
    since the job ended)."""
    if record.charged_micros is not None or record.status.value not in SETTLED_OUTCOMES:
        return None
    ended = record.history.get(record.status.value)
    if ended is None:
        return None
    waited = max((now - ended).total_seconds(), 0.0)
    if waited >= bound:
        return None
    low, high = SETTLEMENT_POLL_SECONDS
    return min(max(waited, low), high, bound - waited)


def retry_wait(attempts: int, schedule: tuple[float, ...] = RETRY_SCHEDULE_SECONDS) -> float:
    """Seconds to wait after `attempts` failed attempts (1-based): the schedule's, then its
    last (hourly with the production one)."""
    if attempts <= len(schedule):
        return schedule[max(attempts, 1) - 1]
    return schedule[-1]


def parse_schedule(text: str) -> tuple[float, ...]:
    """CLIPLINE_CALLBACKS_RETRY_SECONDS: comma-separated positive seconds, e.g. `30,120,300`;
    after the last, attempts go on at the last's interval. ValueError saying what is wrong."""
    try:
        waits = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of seconds") from None
    if not waits or any(not 0 < w <= 24 * 3600 for w in waits):
        raise ValueError(f"{text!r}: each wait must be more than 0 and at most 86400 seconds")
    return waits


def payload(record: JobRecordV1) -> dict[str, object]:
    """The webhook body of a job's end, from its record. No presigned URLs: they are
    credentials, and expire; the caller fetches the assets with its API key."""
    ended = record.history.get(record.status.value)
    return {
        "type": f"video.{record.status.value}",
        "timestamp": ended.isoformat() if ended else None,
        "data": {
            "job_id": record.job_id,
            "tenant": record.tenant,
            "status": record.status.value,
            "reason": record.reason,
            "detail": record.detail,
            "stage": record.stage,
            "model": record.spec.model,
            "cost_micros": record.cost_micros,
            "charged_micros": record.charged_micros,
            "produced_seconds": record.produced_seconds,
            "assets": [
                {
                    "variant": a.variant,
                    "content_type": a.content_type,
                    "size_bytes": a.size_bytes,
                    "sha256": a.sha256,
                }
                for a in record.assets
            ],
            "idempotency_key": record.idempotency_key,
        },
    }


def targets_of(record: JobRecordV1, endpoint: Endpoint | None) -> dict[str, str]:
    """Who receives a job's end: its own URL (`job`) and its tenant's endpoint (`tenant`)."""
    found: dict[str, str] = {}
    if record.callback_url:
        found["job"] = record.callback_url
    if endpoint is not None and endpoint.url:
        found["tenant"] = endpoint.url
    return found


def start(current: Deliveries | None, record: JobRecordV1, targets: dict[str, str]) -> Deliveries:
    """The state to work from: `current`, or a new one naming every target (a target added
    to the tenant after the first attempt is not added: the job's receivers are fixed once)."""
    if current is not None:
        return current
    return Deliveries(
        event=record.status.value,
        webhook_id=webhook_id(record.job_id, record.status.value),
        targets={name: TargetDelivery(url=url) for name, url in targets.items()},
    )


def due(target: TargetDelivery, now: datetime) -> float | None:
    """Seconds until `target` may be attempted (0: now); None: it is done with."""
    if target.state != "pending":
        return None
    if target.sending_since is not None:
        claimed_until = target.sending_since + timedelta(seconds=CLAIM_SECONDS)
        if claimed_until > now:
            return (claimed_until - now).total_seconds()
    if target.next_attempt_at is not None and target.next_attempt_at > now:
        return (target.next_attempt_at - now).total_seconds()
    return 0.0


def claim(target: TargetDelivery, now: datetime) -> TargetDelivery:
    """The target as recorded just before a POST."""
    return target.model_copy(
        update={
            "sending_since": now,
            "attempts": target.attempts + 1,
            "first_attempt_at": target.first_attempt_at or now,
        }
    )


def settle(
    target: TargetDelivery,
    now: datetime,
    status: int | None,
    error: str | None,
    wait: float,
    *,
    give_up_after: float = GIVE_UP_AFTER_SECONDS,
) -> TargetDelivery:
    """The target after an attempt's outcome: delivered on a 2xx; else retried after `wait`
    seconds, or given up once the next attempt would start past `give_up_after` seconds from
    the first."""
    timeline = [*target.timeline, Attempt(at=now, status=status, error=error)][-TIMELINE_MAX:]
    common: dict[str, object] = {
        "sending_since": None, "last_status": status, "last_error": error, "timeline": timeline,
    }  # fmt: skip
    if status is not None and 200 <= status < 300:
        return target.model_copy(
            update={**common, "state": "delivered", "delivered_at": now, "next_attempt_at": None}
        )
    first = target.first_attempt_at or now
    later = now + timedelta(seconds=wait)
    if (later - first).total_seconds() > give_up_after:
        return target.model_copy(
            update={**common, "state": "given_up", "given_up_at": now, "next_attempt_at": None}
        )
    return target.model_copy(update={**common, "next_attempt_at": later})

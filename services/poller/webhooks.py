"""The poller's webhook endpoint, `POST /webhooks/videos`: Standard Webhooks signatures checked
with the `standardwebhooks` library, replays refused, then the named job looked at at once.

Refusals (JSON `{"error": {"reason", "detail"}}`): 503 `webhooks_disabled` (no
CLIPLINE_WEBHOOK_SECRET), 413 `too_large`, 401 `invalid_signature` (missing, malformed or wrong),
401 `stale` (timestamp outside the library's 5-minute tolerance), 409 `replayed` (a webhook id
already taken, by this replica or another), 400 `malformed_event` (signed, but not a video
event), 400 `invalid_video_id` (signed, but `data.id` is not a video id of the upstream's
contract, shared/provider/ids.py: e.g. unicode or a path). A verified event is answered 202
whatever it leads to (an unknown video is logged and ignored: a retry could not change that),
except 503 `retry` when the look failed (the upstream or NATS unreachable, a 429): the id is
released, so the sender's retry is taken. Neither the secret nor a signature is ever logged or
answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.poller.domain import Malformed, Throttled, VideoEvent, video_event
from services.poller.observe import PollerObserver
from services.poller.ports import WebhookDeps
from services.poller.usecases import (
    Looked,
    NotFollowed,
    UnknownVideo,
    announce_recorded,
    on_video_event,
)
from shared.logs import job_context
from shared.messaging import periodically
from shared.provider.ids import MAX_SHOWN, is_valid_video_id

CLAIM_RENEW_SECONDS = 1.5
"""While a look runs its claim is renewed this often, so the sender's retry does not take it
over (a claim neither done nor renewed for 5 s is a dead taker's)."""

log = logging.getLogger("clipline.poller.webhooks")
PATH = "/webhooks/videos"
MAX_BODY_BYTES = 64 * 1024
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
REFUSED_OUTCOMES = {
    "invalid_signature": "bad_signature",
    "malformed_event": "bad_request",
    "invalid_video_id": "bad_request",
}
"""A refusal's reason as clipline.poller.webhooks names its outcome (others: the reason)."""
_UNCONFIGURED = PollerObserver()
"""Counts the webhooks refused while webhooks are off (no deps, so no configured labels)."""


@dataclass(frozen=True, slots=True)
class Verified:
    webhook_id: str
    event: VideoEvent


@dataclass(frozen=True, slots=True)
class Refused:
    status: int
    reason: str
    detail: str


def verify(verifier: Webhook, body: bytes, headers: Mapping[str, str]) -> Verified | Refused:
    """Is this a video event signed with our secret, within the timestamp tolerance?"""
    if len(body) > MAX_BODY_BYTES:
        return Refused(413, "too_large", f"the body is over {MAX_BODY_BYTES} bytes")
    wanted = {name: headers.get(name, "") for name in HEADERS}
    try:
        verifier.verify(body, wanted, json_parse=False)
    except WebhookVerificationError as exc:
        # The library's messages are fixed sentences; none holds a header's value.
        if "timestamp too" in str(exc):
            return Refused(401, "stale", f"{exc}: outside the 5-minute tolerance")
        return Refused(401, "invalid_signature", str(exc))
    except ValueError:  # not UTF-8, a signature without "v1,", bad base64: unverifiable
        return Refused(401, "invalid_signature", "malformed webhook-signature or body")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return Refused(400, "malformed_event", "the signed body is not JSON")
    match video_event(payload):
        case Malformed(detail=detail):
            return Refused(400, "malformed_event", detail)
        case VideoEvent() as event if not is_valid_video_id(event.video_id):
            # Signed, yet no id of the upstream's: no retry can change that, so 400 (the sender
            # stops) before the id goes near a key, a URL or a record.
            shown = repr(event.video_id[:MAX_SHOWN])
            return Refused(400, "invalid_video_id", f"`data.id` {shown} is not a video id")
        case VideoEvent() as event:
            return Verified(wanted["webhook-id"], event)


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: a status and a JSON body (plus headers, e.g. Retry-After)."""

    status: int
    body: dict[str, object]
    headers: tuple[tuple[str, str], ...] = ()


def _answer(status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, body, tuple((headers or {}).items()))


def _refuse(status: int, reason: str, detail: str) -> Answer:
    return _answer(status, {"error": {"reason": reason, "detail": detail}})


class WebhookEndpoint:
    """The endpoint as a bare ASGI app: one route, so no framework's routing, middleware and
    per-request span (a seventh of the poller's CPU per job under FastAPI; the look itself has
    its span in the job's trace). Any other path under /webhooks/ is 404, any method but POST
    405 (with Allow), both in the endpoint's error envelope."""

    def __init__(self, deps: WebhookDeps | None) -> None:
        self.deps = deps

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # websocket or lifespan: not ours (Dispatch routes HTTP)
            return
        if scope["path"] != PATH:
            answer = _refuse(404, "not_found", f"no such endpoint; webhooks go to POST {PATH}")
        elif scope["method"] != "POST":
            answer = _refuse(405, "method_not_allowed", f"{PATH} takes POST only")
            answer = Answer(answer.status, answer.body, (("Allow", "POST"),))
        else:
            body = await _read_at_most(receive, MAX_BODY_BYTES)
            if body is None:  # the sender went away mid-body: nobody to answer
                return
            answer = await receive_webhook(self.deps, body, _headers(scope))
        await _send(send, answer)


def build_webhooks(deps: WebhookDeps | None) -> WebhookEndpoint:
    """The endpoint; `deps` None (no secret configured): it answers 503 and polling alone runs."""
    return WebhookEndpoint(deps)


async def receive_webhook(
    deps: WebhookDeps | None, body: bytes, headers: Mapping[str, str]
) -> Answer:
    """One webhook delivery: verified, claimed (a replay refused), then its job looked at;
    counted by outcome (clipline.poller.webhooks)."""
    if deps is None:
        _UNCONFIGURED.webhook("disabled")
        return _refuse(503, "webhooks_disabled", "CLIPLINE_WEBHOOK_SECRET is not set")
    observer = deps.follow.observer
    verdict = verify(deps.verifier, body, headers)
    if isinstance(verdict, Refused):
        log.warning("webhook refused: %s (%s)", verdict.reason, verdict.detail)
        observer.webhook(REFUSED_OUTCOMES.get(verdict.reason, verdict.reason))
        return _refuse(verdict.status, verdict.reason, verdict.detail)
    try:
        taken = await deps.seen.claim(verdict.webhook_id)
    except Exception as exc:  # NATS unreachable: nothing was taken, the retry will be
        log.warning("webhook %r: id not recorded: %r", verdict.event.event_id, exc)
        observer.webhook("retry")
        return _refuse(503, "retry", "the webhook could not be recorded now; retry later")
    if not taken:
        try:
            await announce_recorded(deps, verdict.event)
        except Exception as exc:  # best effort: the job's own poll is the safety net
            log.warning("webhook %r: recorded state not announced: %r", verdict.event.event_id, exc)
        log.warning("webhook refused: replayed (event %r)", verdict.event.event_id)
        observer.webhook("duplicate")
        detail = f"webhook id {verdict.webhook_id!r:.80} was already taken"
        return _refuse(409, "replayed", detail)
    answer, outcome = await _take(deps, verdict.webhook_id, verdict.event)
    observer.webhook(outcome)
    return answer


def _headers(scope: Any) -> dict[str, str]:
    """The request's headers by lower-case name (the first of a repeated one)."""
    out: dict[str, str] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


async def _read_at_most(receive: Any, limit: int) -> bytes | None:
    """The body, but never more than `limit` + 1 bytes of it in memory (`verify` refuses it);
    None when the client disconnected before its end."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit or not message.get("more_body", False):
            return bytes(body[: limit + 1])


async def _send(send: Any, answer: Answer) -> None:
    payload = json.dumps(answer.body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _take(deps: WebhookDeps, webhook_id: str, event: VideoEvent) -> tuple[Answer, str]:
    """The look a verified, claimed webhook asks for: the answer, and its outcome's name."""
    try:
        async with periodically(CLAIM_RENEW_SECONDS, lambda: deps.seen.renew(webhook_id)):
            outcome = await on_video_event(deps, event)
    except asyncio.CancelledError:  # the server stopping: the sender's retry must be taken
        await asyncio.shield(deps.seen.release(webhook_id))
        raise
    except Exception as exc:  # the sender retries a 5xx; the poll stays the safety net
        await deps.seen.release(webhook_id)
        log.warning("webhook %r for %r: look failed: %r", event.event_id, event.video_id, exc)
        return _refuse(503, "retry", "the job could not be looked at now; retry later"), "retry"
    if isinstance(outcome, Throttled):
        await deps.seen.release(webhook_id)
        retry = {"Retry-After": str(max(1, math.ceil(outcome.delay)))}
        detail = {"reason": "retry", "detail": "the upstream is rate limiting"}
        return _answer(503, {"error": detail}, retry), "throttled"
    try:
        await deps.seen.done(webhook_id)
    except Exception as exc:  # handled anyway; only a replay after the stale time gets in
        log.warning("webhook %r: not marked done: %r", event.event_id, exc)
    match outcome:
        case UnknownVideo():
            log.info(
                "webhook %r: video %r is no job of ours; ignored", event.event_id, event.video_id
            )
            return _answer(202, {"accepted": "ignored", "detail": "unknown video"}), "unknown_job"
        case NotFollowed(job_id=job_id, status=status):
            with job_context(job_id):
                log.info("webhook %r: job %s is %s, not followed", event.event_id, job_id, status)
            body: dict[str, object] = {
                "accepted": "not_followed",
                "job_id": job_id,
                "status": status,
            }
            return _answer(202, body), "not_followed"
        case Looked(job_id=job_id, still_running=running):
            with job_context(job_id):
                log.info("webhook %r (%r): job %s looked at", event.event_id, event.type, job_id)
            return _answer(
                202, {"accepted": "looked", "job_id": job_id, "running": running}
            ), "looked"

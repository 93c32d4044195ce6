"""Caller webhooks, the sending: a durable consumer of the terminal events (in intake) that POSTs
each job's end, signed (Standard Webhooks), to the job's URL and its tenant's endpoint, once,
retried by delayed naks on the schedule of callbacks.py; public addresses only (checked on the
addresses a host name resolves to, at connect time) unless the deployment allows private ones."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from faststream.exceptions import NackMessage
from standardwebhooks import Webhook

from services.intake.callbacks import (
    GIVE_UP_AFTER_SECONDS,
    SEND_TIMEOUT_SECONDS,
    SETTLEMENT_WAIT_SECONDS,
    Deliveries,
    Endpoint,
    TargetDelivery,
    address_refused,
    claim,
    due,
    payload,
    public,
    retry_wait,
    settle,
    settlement_wait,
    start,
    targets_of,
)
from shared.contracts import (
    JobCancelledV1,
    JobCompletedV1,
    JobFailedV1,
    JobRecordV1,
    JobRejectedV1,
    JobTimedOutV1,
)
from shared.contracts.events import Event
from shared.jobstore import JobStore
from shared.messaging import (
    Context,
    Incoming,
    ServiceRouter,
    Unrecordable,
    event_decoder,
    job_named,
)

log = logging.getLogger("clipline.intake.callbacks")

TERMINAL_EVENTS: tuple[type[Event], ...] = (
    JobCompletedV1, JobFailedV1, JobCancelledV1, JobTimedOutV1, JobRejectedV1,
)  # fmt: skip
ERROR_RETRY_SECONDS = 30.0
"""A store or other unexpected error of the sender: the event is looked at again after this."""
MAX_WAITING = 100_000
"""Jobs whose webhooks may wait out a retry at once (each holds a delayed nak)."""
USER_AGENT = "clipline-webhooks/1"
MIN_NAK_SECONDS = 0.25
"""The shortest delayed nak (a wait for the settlement starts at this)."""


class CallbackStore(Protocol):
    async def endpoint(self, tenant: str) -> Endpoint | None: ...

    async def deliveries(self, tenant: str, job_id: str) -> Deliveries | None: ...

    async def change(
        self, tenant: str, job_id: str, change: Callable[[Deliveries | None], Deliveries | None]
    ) -> Deliveries | None: ...


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, keeping only public addresses (unless `allow_private`): the check is
    on the addresses the connection is then made to, so a name that resolves to a private
    address at send time (DNS rebinding) is refused however it resolved at intake."""

    def __init__(self, inner: AbstractResolver | None = None, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        found = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return found
        kept = [r for r in found if _public_text(r["host"])]
        if not kept:
            raise OSError(f"{host} resolves only to private, loopback or link-local addresses")
        return kept

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _public_text(address: str) -> bool:
    try:
        return public(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return False


@dataclass
class Sender:
    """Delivers the webhooks of jobs' ends. `schedule` (the wait after n failed attempts) and
    `give_up_after` are the production ones unless a test shortens them."""

    jobs: JobStore
    store: CallbackStore
    allow_private: bool = False
    schedule: Callable[[int], float] = retry_wait
    give_up_after: float = GIVE_UP_AFTER_SECONDS
    settle_within: float = SETTLEMENT_WAIT_SECONDS
    """How long after a job's end its first attempt waits for the settled charge."""
    timeout: float = SEND_TIMEOUT_SECONDS
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    resolver: AbstractResolver | None = None
    """The inner resolver (tests: a fixed one); aiohttp's threaded resolver otherwise."""
    _session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=PublicOnlyResolver(self.resolver, allow_private=self.allow_private),
                use_dns_cache=False,  # every connection resolves (and is checked) afresh
                limit=64,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,  # no proxy from the environment: the check is on the receiver
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """The receiver's status, or None and why there was none. Redirects are not followed
        (a redirect could name a private address): a 3xx is a failed attempt."""
        host = urlsplit(url).hostname or ""
        if not self.allow_private and address_refused(host):
            return None, "refused: a private, loopback or link-local address"
        try:
            async with self.session().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return response.status, None if response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return None, f"no answer within {self.timeout:.0f}s"
        except (aiohttp.ClientError, OSError) as exc:
            reason = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
            return None, f"{type(exc).__name__}: {str(reason)[:200]}"

    async def deliver(self, tenant: str, job_id: str) -> float | None:
        """Attempt what is due of the job's webhooks; seconds until the next is due, or None
        when every receiver is done with (or the job has none)."""
        record = await self.jobs.get(tenant, job_id)
        if record is None or not record.terminal:
            return None  # a request refused at intake has no record (and no callback_url)
        endpoint = await self.store.endpoint(tenant)
        targets = targets_of(record, endpoint)
        state = await self.store.deliveries(tenant, job_id)
        if state is None and not targets:
            return None
        if state is None:  # nothing attempted yet: the first carries the settled charge
            settling = settlement_wait(record, self.clock(), self.settle_within)
            if settling is not None:
                return settling
        waits: list[float] = []
        names = list(state.targets) if state is not None else list(targets)
        for name in names:
            wait = await self._attempt(record, endpoint, targets, name)
            if wait is not None:
                waits.append(wait)
        return min(waits) if waits else None

    async def _attempt(
        self, record: JobRecordV1, endpoint: Endpoint | None, targets: dict[str, str], name: str
    ) -> float | None:
        now = self.clock()
        found: list[TargetDelivery] = []

        def take(current: Deliveries | None) -> Deliveries | None:
            found.clear()
            state = start(current, record, targets)
            target = state.targets.get(name)
            if target is None:
                return None
            found.append(target)
            if due(target, now) != 0.0:
                return None  # not ours now: waiting, claimed by another, or done
            claimed = {**state.targets, name: claim(target, now)}
            return state.model_copy(update={"targets": claimed})

        state = await self.store.change(record.tenant, record.job_id, take)
        if state is None:
            return due(found[0], now) if found else None
        target = state.targets[name]
        status, error = await self._send(record, endpoint, state.webhook_id, target.url)
        after = self.clock()
        # The outcome in short: an error's text (which may quote the URL) goes to the KV state
        # the tenant reads, not into the log.
        log.info(
            "intake: webhook %s of job %s to its %s receiver: attempt %d, %s",
            state.event, record.job_id, name, target.attempts,
            f"HTTP {status}" if status is not None else "no answer",
        )  # fmt: skip
        wait = self.schedule(target.attempts)
        done = settle(target, after, status, error, wait, give_up_after=self.give_up_after)

        def record_outcome(current: Deliveries | None) -> Deliveries | None:
            base = current or state
            return base.model_copy(update={"targets": {**base.targets, name: done}})

        await self.store.change(record.tenant, record.job_id, record_outcome)
        return due(done, after)

    async def _send(
        self, record: JobRecordV1, endpoint: Endpoint | None, msg_id: str, url: str
    ) -> tuple[int | None, str | None]:
        if endpoint is None:
            return None, "the tenant has no webhook signing secret (clipline webhooks set)"
        body = json.dumps(payload(record), separators=(",", ":")).encode()
        stamp = datetime.now(UTC)  # the signature's own: fresh at every attempt
        signature = Webhook(endpoint.secret).sign(msg_id, stamp, body.decode())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature,
        }
        return await self.post(url, body, headers)


class HasCallbacks(Protocol):
    @property
    def callbacks(self) -> Sender | None: ...


async def on_job_ended(event: Event | None, deps: Annotated[HasCallbacks, Context("deps")]) -> None:
    # No docstring: FastStream would put it into docs/asyncapi.json.
    sender = deps.callbacks
    if sender is None or event is None:
        return
    try:
        wait = await sender.deliver(event.tenant, event.job_id)
    except Exception as exc:  # the store unreachable: looked at again later, never lost
        log.warning(
            "intake: webhooks of job %s not attempted (%s: %.200s); again in %.0fs",
            event.job_id, type(exc).__name__, exc, ERROR_RETRY_SECONDS,
        )  # fmt: skip
        raise NackMessage(delay=ERROR_RETRY_SECONDS) from None
    if wait is not None:
        raise NackMessage(delay=max(wait, MIN_NAK_SECONDS))


async def rejected_or_none(msg: Incoming) -> JobRejectedV1 | None:
    """A rejection as the house decoder judges it; None (acked, nothing to send) for one of a
    request that named no valid tenant (`_unknown`): it has no job, record or receiver."""
    if isinstance(job_named(msg.raw_message.subject), Unrecordable):
        return None
    return await REJECTED(msg)


REJECTED = event_decoder(JobRejectedV1)


def subscribe(router: ServiceRouter) -> None:
    """intake's durable consumers of the terminal events (shared.identities grants them)."""
    for kind in TERMINAL_EVENTS:
        if kind is JobRejectedV1:
            router.on_subject(
                kind.subject_filter(), kind.durable(router.service), max_workers=16,
                max_ack_pending=MAX_WAITING, decoder=rejected_or_none,
                title=f"{router.service} consumes {kind.subject_filter()}",
            )(on_job_ended)  # fmt: skip
        else:
            router.on(kind, max_workers=16, max_ack_pending=MAX_WAITING)(on_job_ended)

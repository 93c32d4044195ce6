"""The `submitted` messages this process holds in a delayed nak (a followed job's durable timer,
its next poll), by job: acked as soon as the job moves on here (a webhook's look ends it), so
no redelivery comes a minute later only to find the job past following and ack it. A webhook
that comes while the delivery is still being handled (not yet held) leaves a mark instead, so
the handling acks it rather than leaving it to wait.

Memory only, and only a shortcut: a message forgotten (the process restarted, the map full, an
ack lost) is redelivered when its timer comes due, and its poll decides as before. Each entry
also keeps what the handling knew (the job, its upstream id, the record it read), so a webhook
for that video needs neither the upstream-index read nor a record read (usecases.py).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from services.poller.follow import Followed
from services.poller.ports import TimerAcks
from shared.contracts import JobRecordV1
from shared.jobstore import KNOWN_RECORDS

log = logging.getLogger("clipline.poller")

MAX_HELD = 100_000
"""Entries kept at most (the oldest forgotten first): as many as the poller's consumer may hold
pending (handlers.MAX_FOLLOWED); each is a few hundred bytes and a record."""

MAX_RECORDS = KNOWN_RECORDS
"""Entries that keep their job's record, at most: past as many as the job store remembers
revisions of, a webhook's compare-and-set reads the record anyway, and a record is a
kilobyte or more (bench.inflight, 10,000 held: the poller's RSS 142.9 MB with every record,
133.1 with this cap, 77.6 idle). The rest keep where their ack goes and their job; a webhook
for one reads the record (a GET), as for a job another replica holds."""

MAX_MARKS = 4096
"""Jobs moved on by a webhook with no delivery held, remembered at most (the newest): a mark
only matters to a handling under way, the moment between its delivery and its nak."""

JobKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Held:
    """One `submitted` delivery in its delayed nak: where its ack goes, and what its handling
    knew of the job."""

    reply: str
    """The delivery's ack subject ($JS.ACK.<stream>.<durable>.<delivered>.<seq>...)."""
    job: Followed
    record: JobRecordV1 | None
    """The record the handling decided on; None when its own look may have changed it since
    (a webhook then reads the record, as when another replica holds the job)."""
    traceparent: str | None = None
    """The delivery's `traceparent`: a span of the job's trace a webhook's look hangs under."""

    @property
    def key(self) -> JobKey:
        return self.job.tenant, self.job.job_id


class HeldTimers:
    """The held deliveries by job, and their jobs by upstream video id. A delivery taken by a
    webhook's look is out until the look ends: then acked (the job moved on), or held again
    (still followed) unless the message came back meanwhile (its redelivery decides)."""

    def __init__(
        self, acks: TimerAcks, *, limit: int = MAX_HELD, records: int = MAX_RECORDS
    ) -> None:
        self._acks = acks
        self._limit = limit
        self._record_limit = records
        self._records = 0  # held entries that keep a record
        self._held: OrderedDict[JobKey, Held] = OrderedDict()
        self._videos: dict[str, JobKey] = {}
        self._out: dict[JobKey, Held] = {}
        self._moved_on: OrderedDict[JobKey, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, held: Held) -> bool:
        """The handling of a `submitted` delivery is about to leave it in a delayed nak:
        remember it. False when a webhook's look here moved the job on since the delivery
        arrived (a webhook that came while it was being handled): nothing is left to wait for,
        and the handling acks it instead."""
        self._out.pop(held.key, None)  # a newer delivery than any a look has taken
        if held.key in self._moved_on:
            del self._moved_on[held.key]
            return False
        self._keep(held)
        return True

    def arrived(self, tenant: str, job_id: str) -> None:
        """A `submitted` delivery of the job came (its timer came due, or a redelivery): any
        delivery held before is no longer pending, nor one a webhook's look has taken; and
        the handling reads the record after this, so sees any move made before."""
        key = (tenant, job_id)
        self._out.pop(key, None)
        self._moved_on.pop(key, None)
        self._drop(key)

    def take(self, video_id: str) -> Held | None:
        """The delivery held for the job of `video_id`, out to one look until `settle`."""
        key = self._videos.get(video_id)
        if key is None:
            return None
        held = self._drop(key)
        if held is not None:
            self._out[key] = held
        return held

    async def moved_on(self, key: JobKey) -> None:
        """A look that had taken no delivery moved the job past following here: one held while
        it looked is acked; a handling under way (its delivery arrived, not yet held) acks
        instead of waiting (`hold`)."""
        if self._limit <= 0:
            return
        held = self._drop(key)
        if held is not None:
            await self._ack(held)
            return
        self._moved_on[key] = None
        self._moved_on.move_to_end(key)
        while len(self._moved_on) > min(self._limit, MAX_MARKS):
            self._moved_on.popitem(last=False)

    async def settle(
        self, held: Held | None, *, moved_on: bool, record: JobRecordV1 | None = None
    ) -> None:
        """A look that took `held` ended: the job moved past following here (ack the delivery:
        nothing is redelivered), or it is still followed (held again, with `record` as what
        is known of it). Nothing when its message came back meanwhile: its redelivery decides."""
        if held is None or self._out.get(held.key) is not held:
            return
        del self._out[held.key]
        if not moved_on:
            self._keep(Held(held.reply, held.job, record, held.traceparent))
            return
        await self._ack(held)

    async def _ack(self, held: Held) -> None:
        try:
            await self._acks.ack(held.reply)
        except Exception as exc:  # the timer comes due and the poll finds the job moved on
            log.warning("poller: could not ack the held poll of %s: %r", held.job.job_id, exc)

    def _keep(self, held: Held) -> None:
        self._drop(held.key)
        if self._limit <= 0:
            return
        if held.record is not None:
            if self._records >= self._record_limit:
                held = Held(held.reply, held.job, None, held.traceparent)
            else:
                self._records += 1
        self._held[held.key] = held
        self._videos[held.job.upstream_id] = held.key
        while len(self._held) > self._limit:
            self._drop(next(iter(self._held)))

    def _drop(self, key: JobKey) -> Held | None:
        held = self._held.pop(key, None)
        if held is not None and held.record is not None:
            self._records -= 1
        if held is not None and self._videos.get(held.job.upstream_id) == key:
            del self._videos[held.job.upstream_id]
        return held

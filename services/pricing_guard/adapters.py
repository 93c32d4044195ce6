"""Budgets in the clipline_budgets KV bucket: every change of money is one atomic multi-key
compare-and-set (the job's reservation with every window counter it touches), so any number of
pricing_guard replicas, and a crash at any point, neither overshoot a limit nor leak a
reservation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from services.pricing_guard.budgets import (
    PERIODS,
    Charge,
    Dispute,
    Exceeded,
    Limit,
    Period,
    Release,
    Reserve,
    Settlement,
    Slot,
    Usage,
    reserve,
    resolve_usage,
    settle_usage,
    slots_for,
)
from services.pricing_guard.budgets import (
    Counted as CountedSlot,
)
from services.pricing_guard.ports import Claim, Reserved, Settled
from services.pricing_guard.records import (
    USAGE,
    LimitRecord,
    ReservationRecord,
    SpendEntry,
    dispute_key,
    limit_key,
    open_key,
    reservation_key,
    spend_key,
    usage_key,
)
from shared.kvatomic import AtomicStore, Entry, Outcome

Bill = Callable[[ReservationRecord], Settlement]


class KvBudgets:
    """The BudgetStore on JetStream KV (tests run it on an in-memory AtomicStore).

    Admissions waiting at the same moment are decided together, in arrival order, and written
    in one atomic batch (group commit): every admission touches the same global counters, so
    one batch for many beats one batch each, retried against each other."""

    def __init__(self, atomic: AtomicStore, *, max_group: int = 64) -> None:
        self._atomic = atomic
        self._max_group = max_group
        self._waiting: list[tuple[Claim, asyncio.Future[Reserved | Exceeded]]] = []
        self._leader: asyncio.Task[None] | None = None

    # -- admission ---------------------------------------------------------------------------

    async def reserve(self, claim: Claim) -> Reserved | Exceeded:
        """Reserve the claim's estimate in every window it counts against, or in none."""
        decided: asyncio.Future[Reserved | Exceeded] = asyncio.get_running_loop().create_future()
        self._waiting.append((claim, decided))
        if self._leader is None or self._leader.done():
            self._leader = asyncio.create_task(self._drain())
        return await asyncio.shield(decided)

    async def _drain(self) -> None:
        """Decide and write waiting claims, a group at a time, until none is left. A group
        that fails is tried again claim by claim, so one bad claim fails only itself."""
        group: list[tuple[Claim, asyncio.Future[Reserved | Exceeded]]] = []
        try:
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                try:
                    results = await self._reserve_group([claim for claim, _ in group])
                except Exception:  # retried one by one just below
                    for claim, decided in group:
                        await _settle_future(decided, self._reserve_group([claim]))
                    continue
                for (_, decided), result in zip(group, results, strict=True):
                    if not decided.done():
                        decided.set_result(result)
        finally:
            # Cancelled (the service stops): nobody may wait forever on an undecided claim.
            for _, decided in [*group, *self._waiting]:
                if not decided.done():
                    decided.cancel()

    async def _reserve_group(self, claims: list[Claim]) -> list[Reserved | Exceeded]:
        def job(claim: Claim) -> tuple[str, str]:
            return claim.tenant, claim.job_id

        slots = {job(c): slots_for(c.tenant, c.at) for c in claims}
        res_keys = {job(c): reservation_key(c.tenant, c.job_id) for c in claims}
        open_keys = {job(c): open_key(c.tenant, c.job_id) for c in claims}
        every_slot = {s for group in slots.values() for s in group}
        use_keys = sorted({usage_key(s) for s in every_slot})
        pairs = sorted({(s.scope, s.period) for s in every_slot})
        limit_keys = {pair: limit_key(*pair) for pair in pairs}

        def decide(entries: Mapping[str, Entry]) -> Outcome[list[Reserved | Exceeded]]:
            # Limits are read with the counters, afresh on every attempt.
            limits = {pair: _limit(entries[key]) for pair, key in limit_keys.items()}
            usages = {key: _usage(entries[key]) for key in use_keys}
            records = {k: entries[k].value for k in res_keys.values()}
            writes: dict[str, bytes | None] = {}
            results: list[Reserved | Exceeded] = []
            for claim in claims:
                res_key = res_keys[job(claim)]
                existing = records[res_key]
                if existing is not None:  # a redelivery (or a twin in this group)
                    found = ReservationRecord.model_validate_json(existing)
                    results.append(Reserved(found, False))
                    continue
                mine = slots[job(claim)]
                counted = tuple(
                    CountedSlot(s, usages[usage_key(s)], limits[(s.scope, s.period)]) for s in mine
                )
                decision = reserve(counted, claim.estimate_micros)
                if isinstance(decision, Exceeded):
                    # Refused for good: a copy of this admission that reads later (when room
                    # may have opened) finds the refusal instead of reserving.
                    refused = _refused(claim, decision.detail)
                    records[res_key] = writes[res_key] = refused.model_dump_json().encode()
                    results.append(decision)
                    continue
                for slot, usage in zip(mine, decision.usages, strict=True):
                    usages[usage_key(slot)] = usage
                    writes[usage_key(slot)] = USAGE.dump_json(usage)
                record = _reservation(claim, mine, decision)
                records[res_key] = writes[res_key] = record.model_dump_json().encode()
                writes[open_keys[job(claim)]] = b"{}"  # listed by open_jobs() until settled
                results.append(Reserved(record, True))
            return Outcome(writes, results)

        keys = [*res_keys.values(), *open_keys.values(), *use_keys, *limit_keys.values()]
        return await self._atomic.transact(keys, decide)

    # -- settlement --------------------------------------------------------------------------

    async def settle(
        self,
        tenant: str,
        job_id: str,
        bill: Bill,
        outcome: str,
        at: datetime,
        *,
        admitted: bool = True,
    ) -> Settled | None:
        """Settle a job's reservation by `bill`: charged or released (with its ledger entry),
        or disputed. A job that ended before it was ever admitted gets a closed reservation
        ($0), so an admission still in flight for it can no longer reserve anything; an
        admitted job without one (admitted before budgets existed) is left alone (None)."""
        res_key = reservation_key(tenant, job_id)
        closed = _closed(tenant, job_id, at)

        def close(entries: Mapping[str, Entry]) -> Outcome[Settled | None]:
            if entries[res_key].value is not None:
                return Outcome({}, None)  # reserved meanwhile: settle that instead
            return Outcome({res_key: closed.model_dump_json().encode()}, Settled(closed, True))

        while True:
            settled = await self._close(
                tenant, job_id, "reserved", bill=bill, outcome=outcome, at=at
            )
            if settled is not None or admitted:
                return settled
            if (done := await self._atomic.transact([res_key], close)) is not None:
                return done

    async def resolve(
        self, tenant: str, job_id: str, decision: Charge | Release, at: datetime
    ) -> Settled | None:
        """End a dispute: the admin says what the upstream billed."""
        return await self._close(
            tenant, job_id, "disputed", bill=lambda _: decision, outcome="resolved", at=at
        )

    async def _close(
        self, tenant: str, job_id: str, state: str, *, bill: Bill, outcome: str, at: datetime
    ) -> Settled | None:
        res_key = reservation_key(tenant, job_id)
        first = (await self._atomic.read([res_key]))[res_key]
        if first.value is None:
            return None
        slots = ReservationRecord.model_validate_json(first.value).slots  # fixed at reservation
        use_keys = [usage_key(s) for s in slots]
        ledger, disputed = spend_key(tenant, job_id), dispute_key(tenant, job_id)
        still_open = open_key(tenant, job_id)

        def decide(entries: Mapping[str, Entry]) -> Outcome[Settled]:
            record = ReservationRecord.model_validate_json(entries[res_key].value or b"")
            if record.state != state:
                return Outcome({}, Settled(record, False))
            decision = bill(record)
            if state == "disputed" and isinstance(decision, Dispute):
                return Outcome({}, Settled(record, False))
            after = record.settled(decision, at)
            writes: dict[str, bytes | None] = {}
            for key in use_keys:
                usage, estimate = _usage(entries[key]), record.estimate_micros
                if isinstance(decision, Dispute) or state == "reserved":
                    usage = settle_usage(usage, estimate, decision)
                else:
                    usage = resolve_usage(usage, estimate, decision)
                writes[key] = USAGE.dump_json(usage)
            writes[res_key] = after.model_dump_json().encode()
            if state == "reserved":
                writes[still_open] = None
            if isinstance(decision, Dispute):
                writes[disputed] = b"{}"  # listed by disputes() until resolved
            else:
                writes[ledger] = _entry(after, outcome).model_dump_json().encode()
                if state == "disputed":
                    writes[disputed] = None
            return Outcome(writes, Settled(after, True))

        keys = [res_key, ledger, disputed, still_open, *use_keys]
        return await self._atomic.transact(keys, decide)

    # -- reading and configuring -------------------------------------------------------------

    async def set_limit(
        self, scope: str, period: Period, limit: Limit | None, at: datetime
    ) -> None:
        key = limit_key(scope, period)
        record = limit and LimitRecord(
            scope=scope, period=period, limit_micros=limit.limit_micros,
            soft_micros=limit.soft_micros, updated_at=at,
        )  # fmt: skip
        await self._atomic.write({key: record.model_dump_json().encode() if record else None}, {})

    async def limits(self) -> list[LimitRecord]:
        return [LimitRecord.model_validate_json(v) for _, v in await self._atomic.scan("limit.>")]

    async def usage(self, slot: Slot) -> Usage:
        key = usage_key(slot)
        return _usage((await self._atomic.read([key]))[key])

    async def reservation(self, tenant: str, job_id: str) -> ReservationRecord | None:
        key = reservation_key(tenant, job_id)
        entry = (await self._atomic.read([key]))[key]
        return ReservationRecord.model_validate_json(entry.value) if entry.value else None

    async def spend(self, tenant: str | None = None) -> list[SpendEntry]:
        pattern = f"spend.{tenant}.*" if tenant else "spend.>"
        return [SpendEntry.model_validate_json(v) for _, v in await self._atomic.scan(pattern)]

    async def open_jobs(self) -> list[tuple[str, str]]:
        """(tenant, job_id) of every reservation still `reserved`."""
        return await self._jobs_marked("open")

    async def disputes(self) -> list[ReservationRecord]:
        found = []
        for tenant, job_id in await self._jobs_marked("dispute"):
            record = await self.reservation(tenant, job_id)
            if record is not None and record.state == "disputed":
                found.append(record)
        return found

    async def _jobs_marked(self, marker: str) -> list[tuple[str, str]]:
        """(tenant, job_id) of every `<marker>.<tenant>.<job_id>` key."""
        keys = [key for key, _ in await self._atomic.scan(f"{marker}.>")]
        return [(tenant, job_id) for _, tenant, job_id in (k.split(".", 2) for k in keys)]


async def _settle_future(
    decided: asyncio.Future[Reserved | Exceeded], work: Awaitable[list[Reserved | Exceeded]]
) -> None:
    try:
        (result,) = await work
    except Exception as exc:  # the waiting handler raises it (redelivered)
        if not decided.done():
            decided.set_exception(exc)
        return
    if not decided.done():
        decided.set_result(result)


def _limit(entry: Entry) -> Limit | None:
    return LimitRecord.model_validate_json(entry.value).limit if entry.value else None


def _usage(entry: Entry) -> Usage:
    return USAGE.validate_json(entry.value) if entry.value else Usage()


def _refused(claim: Claim, detail: str) -> ReservationRecord:
    """The reservation a job refused for its budget never got: closed at $0 with the why."""
    return ReservationRecord(
        tenant=claim.tenant, job_id=claim.job_id, model=claim.model, size=claim.size,
        seconds=claim.seconds, estimate_micros=claim.estimate_micros, slots=[],
        reserved_at=claim.at, state="released", settled_at=claim.at, charged_micros=0,
        refused="budget_exceeded", why=detail,
    )  # fmt: skip


def _closed(tenant: str, job_id: str, at: datetime) -> ReservationRecord:
    """The reservation of a job that ended before reserving anything: closed at $0."""
    return ReservationRecord(
        tenant=tenant, job_id=job_id, model="", size="", seconds=0, estimate_micros=0,
        slots=[], reserved_at=at, state="released", settled_at=at, charged_micros=0,
        why="ended before any reservation",
    )  # fmt: skip


def _reservation(claim: Claim, slots: tuple[Slot, ...], decision: Reserve) -> ReservationRecord:
    return ReservationRecord(
        tenant=claim.tenant,
        job_id=claim.job_id,
        model=claim.model,
        size=claim.size,
        seconds=claim.seconds,
        estimate_micros=claim.estimate_micros,
        slots=list(slots),
        reserved_at=claim.at,
        alerts=list(decision.alerts),
    )


def _entry(record: ReservationRecord, outcome: str) -> SpendEntry:
    charged = record.charged_micros or 0
    per_second = record.estimate_micros // record.seconds
    billed = charged // per_second if charged and per_second else record.seconds
    day = next((s.window for s in record.slots if s.period == "daily"), "")
    return SpendEntry(
        tenant=record.tenant,
        job_id=record.job_id,
        model=record.model,
        size=record.size,
        seconds=billed,
        amount_micros=charged,
        estimate_micros=record.estimate_micros,
        settlement="charged" if record.state == "charged" else "released",
        outcome=outcome,
        why=record.why or "",
        day=day,
        settled_at=record.settled_at or record.reserved_at,
    )


__all__ = ["PERIODS", "Bill", "KvBudgets"]

"""Budgets in the clipline_budgets KV bucket: every change of money is one atomic multi-key
compare-and-set (the job's reservation with every window counter it touches), so any number of
pricing_guard replicas, and a crash at any point, neither overshoot a limit nor leak a
reservation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    AlertRecord,
    LimitRecord,
    ReservationRecord,
    SlotRecord,
    SpendEntry,
    UsageRecord,
    dispute_key,
    limit_key,
    reservation_key,
    spend_key,
    usage_key,
)
from shared.kvatomic import AtomicStore, Entry, Outcome

Bill = Callable[[ReservationRecord], Settlement]


class KvBudgets:
    """The BudgetStore on JetStream KV (tests run it on an in-memory AtomicStore)."""

    def __init__(self, atomic: AtomicStore) -> None:
        self._atomic = atomic

    # -- admission ---------------------------------------------------------------------------

    async def reserve(self, claim: Claim) -> Reserved | Exceeded:
        """Reserve the claim's estimate in every window it counts against, or in none."""
        slots = slots_for(claim.tenant, claim.at)
        res_key = reservation_key(claim.tenant, claim.job_id)
        keys = {slot: usage_key(slot) for slot in slots}
        limits = await self._limits_of(slots)

        def decide(entries: Mapping[str, Entry]) -> Outcome[Reserved | Exceeded]:
            existing = entries[res_key].value
            if existing is not None:  # a redelivery: reserved once already
                return Outcome({}, Reserved(ReservationRecord.model_validate_json(existing), False))
            counted = tuple(
                CountedSlot(slot, _usage(entries[key]), limits.get((slot.scope, slot.period)))
                for slot, key in keys.items()
            )
            decision = reserve(counted, claim.estimate_micros)
            if isinstance(decision, Exceeded):
                return Outcome({}, decision)
            record = _reservation(claim, slots, decision)
            writes: dict[str, bytes | None] = {
                key: UsageRecord.of(usage).model_dump_json().encode()
                for key, usage in zip(keys.values(), decision.usages, strict=True)
            }
            writes[res_key] = record.model_dump_json().encode()
            return Outcome(writes, Reserved(record, True))

        return await self._atomic.transact([res_key, *keys.values()], decide)

    async def _limits_of(self, slots: tuple[Slot, ...]) -> dict[tuple[str, Period], Limit]:
        pairs = sorted({(s.scope, s.period) for s in slots})
        entries = await self._atomic.read([limit_key(scope, period) for scope, period in pairs])
        limits: dict[tuple[str, Period], Limit] = {}
        for (scope, period), entry in zip(pairs, entries.values(), strict=True):
            if entry.value is not None:
                limits[(scope, period)] = LimitRecord.model_validate_json(entry.value).limit
        return limits

    # -- settlement --------------------------------------------------------------------------

    async def settle(
        self, tenant: str, job_id: str, bill: Bill, outcome: str, at: datetime
    ) -> Settled:
        """Settle a job's reservation by `bill`: charged or released (with its ledger entry),
        or disputed. A job that ended before any reservation gets a closed one (released,
        $0), so an admission still in flight for it can no longer reserve anything."""
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
            if settled is not None:
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
        use_keys = [usage_key(s.slot) for s in slots]
        ledger, disputed = spend_key(tenant, job_id), dispute_key(tenant, job_id)

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
                writes[key] = UsageRecord.of(usage).model_dump_json().encode()
            writes[res_key] = after.model_dump_json().encode()
            if isinstance(decision, Dispute):
                writes[disputed] = b"{}"  # listed by disputes() until resolved
            else:
                writes[ledger] = _entry(after, outcome).model_dump_json().encode()
                if state == "disputed":
                    writes[disputed] = None
            return Outcome(writes, Settled(after, True))

        return await self._atomic.transact([res_key, ledger, disputed, *use_keys], decide)

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

    async def disputes(self) -> list[ReservationRecord]:
        found = []
        for key, _ in await self._atomic.scan("dispute.>"):
            _, tenant, job_id = key.split(".", 2)
            record = await self.reservation(tenant, job_id)
            if record is not None and record.state == "disputed":
                found.append(record)
        return found


def _usage(entry: Entry) -> Usage:
    return UsageRecord.model_validate_json(entry.value).usage if entry.value else Usage()


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
        slots=[SlotRecord(scope=s.scope, period=s.period, window=s.window) for s in slots],
        reserved_at=claim.at,
        alerts=[AlertRecord.of(a) for a in decision.alerts],
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

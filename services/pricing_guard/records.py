"""What pricing_guard keeps in the clipline_budgets bucket: the limits (one catalog), window
counters (one key per limited scope), per-job reservations (JSON; a closed one is also the job's
line of the spend ledger), and the keys they live under."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from services.pricing_guard.budgets import (
    GLOBAL,
    Alert,
    Charge,
    Dispute,
    Limit,
    Period,
    Release,
    Settlement,
    Slot,
    Usage,
)

ReservationState = Literal["reserved", "charged", "released", "disputed"]


class Stored(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class LimitRecord(Stored):
    scope: str
    period: Period
    limit_micros: int
    soft_micros: int | None = None
    updated_at: datetime

    @property
    def limit(self) -> Limit:
        return Limit(self.limit_micros, self.soft_micros)


class LimitEntry(Stored):
    """A limit in the catalog. `pending_since` is set while its counter is being initialised
    from the reservations already made (a limit set on a window that had none): jobs of its
    scope wait meanwhile, so none is counted twice or missed."""

    limit_micros: int
    soft_micros: int | None = None
    updated_at: datetime
    pending_since: datetime | None = None

    @property
    def limit(self) -> Limit:
        return Limit(self.limit_micros, self.soft_micros)


class Catalog(Stored):
    """Every limit of every scope, in one key: read once per batch of admissions, and written
    (unchanged) by every batch, so a batch decided under limits that changed meanwhile fails
    its compare-and-set and is decided again."""

    limits: dict[str, dict[Period, LimitEntry]] = {}

    def entry(self, scope: str, period: Period) -> LimitEntry | None:
        return self.limits.get(scope, {}).get(period)

    def active(self, scope: str, period: Period) -> Limit | None:
        entry = self.entry(scope, period)
        return entry.limit if entry is not None and entry.pending_since is None else None

    def limited(self, scope: str) -> bool:
        """Has `scope` a counter key (a limit, active or pending, on some period)?"""
        return bool(self.limits.get(scope))

    def pending(self, scopes: tuple[str, ...]) -> list[tuple[str, Period, datetime]]:
        return [
            (scope, period, entry.pending_since)
            for scope in scopes
            for period, entry in self.limits.get(scope, {}).items()
            if entry.pending_since is not None
        ]

    def with_entry(self, scope: str, period: Period, entry: LimitEntry | None) -> Catalog:
        limits = {s: dict(periods) for s, periods in self.limits.items()}
        periods = limits.setdefault(scope, {})
        if entry is None:
            periods.pop(period, None)
        else:
            periods[period] = entry
        return Catalog(limits={s: p for s, p in limits.items() if p})

    def records(self) -> list[LimitRecord]:
        return [
            LimitRecord(
                scope=scope,
                period=period,
                limit_micros=e.limit_micros,
                soft_micros=e.soft_micros,
                updated_at=e.updated_at,
            )
            for scope, periods in self.limits.items()
            for period, e in periods.items()
        ]


class Counters(Stored):
    """A limited scope's counters: per limited period, the newest windows' usage."""

    windows: dict[Period, dict[str, Usage]] = {}


USAGE = TypeAdapter(Usage)
"""A window's counters as stored (the domain dataclass itself, validated by pydantic)."""


class ReservationRecord(Stored):
    """One job's reservation: made with the window counters in one atomic write, and moved
    (charged, released, disputed) with them in another, so none is ever counted twice. It
    lives under the job's `open` key while `reserved`, under its `res` key once closed."""

    tenant: str
    job_id: str
    model: str
    size: str
    seconds: int
    estimate_micros: int
    slots: list[Slot]
    state: ReservationState = "reserved"
    reserved_at: datetime
    settled_at: datetime | None = None
    charged_micros: int | None = None
    why: str | None = None
    refused: str | None = None
    """The reason the job was refused instead (e.g. budget_exceeded); `why` says the detail."""
    alerts: list[Alert] = []
    outcome: str | None = None
    """How the job ended (completed, failed, ..., `resolved` by an admin), set when its cost
    became final (charged or released by a settlement): such a record is a spend-ledger line."""

    def settled(self, decision: Settlement, at: datetime, outcome: str) -> ReservationRecord:
        update: dict[str, object]
        match decision:
            case Charge(amount_micros=amount, why=why):
                update = {"state": "charged", "charged_micros": amount, "why": why}
            case Release(why=why):
                update = {"state": "released", "charged_micros": 0, "why": why}
            case Dispute(why=why):
                update = {"state": "disputed", "why": why}
        if not isinstance(decision, Dispute):
            update["outcome"] = outcome
        return self.model_copy(update={**update, "settled_at": at})


class SpendEntry(Stored):
    """One line of the spend ledger: a job's cost once final (read from its closed reservation;
    a bucket written before kept it under its own `spend` key)."""

    tenant: str
    job_id: str
    model: str
    size: str
    seconds: int
    """Seconds billed (what the upstream produced for a charge, else what was asked)."""
    amount_micros: int
    estimate_micros: int
    settlement: Literal["charged", "released"]
    outcome: str
    """How the job ended: completed, failed, timed_out, cancelled (or `resolved` by an admin)."""
    why: str
    day: str
    """The UTC day the job was admitted: the daily budget window it counts against."""
    settled_at: datetime


# -- keys ------------------------------------------------------------------------------------


def scope_key(scope: str) -> str:
    """`global` -> `global`; `tenant:acme` -> `tenant.acme` (KV keys are subject-like)."""
    return GLOBAL if scope == GLOBAL else "tenant." + scope.removeprefix("tenant:")


CATALOG_KEY = "limits"
"""The catalog of every limit."""
GUARD_KEY = "guard"
"""Written (`{}`, whatever its revision, never read) by a batch that has no other key without
an expectation to carry its guard on the catalog: a batch of refusals only."""


def counter_key(scope: str) -> str:
    """The counters of a limited scope (all its limited periods in one key)."""
    return f"count.{scope_key(scope)}"


def limit_key(scope: str, period: Period) -> str:
    """A limit as kept before the catalog (read once, to convert it)."""
    return f"limit.{scope_key(scope)}.{period}"


def usage_key(slot: Slot) -> str:
    """A window's counters as kept before the catalog (every window, limited or not)."""
    return f"use.{scope_key(slot.scope)}.{slot.period}.{slot.window}"


LAYOUT_KEY = "layout"
"""Written once the reservations of an older layout are converted (see KvBudgets._ready)."""
OPEN_MARKER = b"{}"
"""What an `open` key held before it held the reservation itself (the older layout)."""


def reservation_key(tenant: str, job_id: str) -> str:
    """A job's closed reservation (charged, released, disputed, refused): written once the
    reservation leaves `reserved` (and, in the older layout, from its admission on)."""
    return f"res.{tenant}.{job_id}"


def dispute_key(tenant: str, job_id: str) -> str:
    return f"dispute.{tenant}.{job_id}"


def open_key(tenant: str, job_id: str) -> str:
    """A job's reservation while it is `reserved` (what the sweeper looks at); deleted when it
    closes, so its delete marker (a revision above 0) tells any later admission of the job
    that it was decided already."""
    return f"open.{tenant}.{job_id}"


def spend_key(tenant: str, job_id: str) -> str:
    """A spend-ledger line as the older layout kept it (read, no longer written)."""
    return f"spend.{tenant}.{job_id}"

"""pricing_guard's money in metrics and spans: micro-dollars reserved, settled, released and
disputed (counted once per job, on the write that made them), budget utilisation per scope
and period, disputed reservations, and the budget decision and settlement on the job's span."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace

from services.pricing_guard.budgets import GLOBAL, Exceeded, Limit, Period, Slot, Usage, window
from services.pricing_guard.ports import BudgetStore
from services.pricing_guard.records import ReservationRecord
from shared import metrics
from shared.moves import provider

log = logging.getLogger("clipline.pricing_guard")

REFRESH_SECONDS = 30.0
"""How often the budget gauges are read again from the store (other replicas' admissions, a
new window at midnight, limits changed, disputes resolved): a few KV reads."""


def money_labels(record: ReservationRecord) -> dict[str, str]:
    return {"tenant": record.tenant, "provider": provider(), "model": record.model}


_SEEN: set[str] = set()
"""Tenants this process reserved for: each has a disputed-reservations series (0 when none)."""
_DISPUTING: set[str] = set()
"""Tenants with disputed reservations at the last reading (Gauges.refresh)."""


def count_reserved(record: ReservationRecord) -> None:
    """A reservation just written (not one an earlier delivery made). The money series of its
    tenant and model start at 0 with it (settled, released, disputed; the disputed gauge too):
    so the dashboards and alerts read a series from the first job on, and increase() counts the
    first settlement whole."""
    if record.estimate_micros > 0 and record.refused is None:
        labels = money_labels(record)
        metrics.COST_RESERVED.add(record.estimate_micros, labels)
        for zero in (metrics.COST_SETTLED, metrics.COST_RELEASED, metrics.COST_DISPUTED):
            zero.add(0, labels)
        if record.tenant not in _SEEN:
            _SEEN.add(record.tenant)
            if record.tenant not in _DISPUTING:
                metrics.RESERVATIONS_DISPUTED.set(0, {"tenant": record.tenant})


@dataclass(frozen=True, slots=True)
class Moved:
    """What a settlement (or a dispute's resolution) did with a reservation's estimate."""

    charged: int = 0
    released: int = 0
    disputed: int = 0


def settlement_of(after: ReservationRecord) -> Moved:
    """Where the estimate went when the reservation was closed as `after` says. A charge above
    the estimate (an overrun) releases nothing."""
    estimate = after.estimate_micros
    match after.state:
        case "charged":
            charged = after.charged_micros or 0
            return Moved(charged=charged, released=max(0, estimate - charged))
        case "released":
            return Moved(released=estimate)
        case "disputed":
            return Moved(disputed=estimate)
    return Moved()


def count_settled(after: ReservationRecord) -> Moved:
    """A settlement (or resolution) just written: its micro-dollars counted, and shown on the
    current span."""
    moved = settlement_of(after)
    labels = money_labels(after)
    if moved.charged:
        metrics.COST_SETTLED.add(moved.charged, labels)
    if moved.released:
        metrics.COST_RELEASED.add(moved.released, labels)
    if moved.disputed:
        metrics.COST_DISPUTED.add(moved.disputed, labels)
    span = trace.get_current_span()
    if span.is_recording():
        attributes = {
            "clipline.settlement": after.state,
            "clipline.cost.charged_micros": moved.charged,
            "clipline.cost.released_micros": moved.released,
            "clipline.cost.disputed_micros": moved.disputed,
        }
        span.set_attributes(attributes)
        span.add_event("clipline.settlement", attributes)
    return moved


def note_admitted(reservation: ReservationRecord) -> None:
    """The budget decision on the current span: admitted, with the micro-dollars reserved."""
    _decision(
        {
            "clipline.budget.decision": "admit",
            "clipline.cost.reserved_micros": reservation.estimate_micros,
        }
    )


def note_refused(reason: str, over: Exceeded | None = None) -> None:
    """The budget decision on the current span: refused, with the scope that refused it."""
    attributes: dict[str, str | int | bool] = {
        "clipline.budget.decision": "refuse",
        "clipline.budget.reason": reason,
    }
    if over is not None:
        attributes |= {
            "clipline.budget.scope": over.slot.scope,
            "clipline.budget.period": over.slot.period,
            "clipline.budget.limit_micros": over.limit_micros,
            "clipline.budget.left_micros": over.left_micros,
            "clipline.cost.needed_micros": over.needed_micros,
        }
    _decision(attributes)


def _decision(attributes: dict[str, str | int | bool]) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)
        span.add_event("clipline.budget.decision", attributes)


# -- gauges --------------------------------------------------------------------------------------


def budget_labels(scope: str, period: Period) -> dict[str, str]:
    """scope `global` or `tenant` (with the tenant), window: the period (daily, monthly,
    lifetime) whose current window the gauge shows (bounded: never a date)."""
    if scope == GLOBAL:
        return {"scope": "global", "tenant": "", "window": period}
    return {"scope": "tenant", "tenant": scope.removeprefix("tenant:"), "window": period}


def ratios(usage: Usage, limit: Limit) -> tuple[float, float | None]:
    """(utilisation, soft threshold) as shares of the limit. A zero limit is full."""
    if limit.limit_micros <= 0:
        return 1.0, None
    soft = None if limit.soft_micros is None else limit.soft_micros / limit.limit_micros
    return usage.used / limit.limit_micros, soft


def show_usage(slot: Slot, usage: Usage, limit: Limit) -> None:
    """Set the utilisation gauges of a limited window (the current one only)."""
    if slot.window != window(slot.period, datetime.now(UTC)):
        return  # an older window (a job admitted before midnight, settled after)
    labels = budget_labels(slot.scope, slot.period)
    used, soft = ratios(usage, limit)
    metrics.BUDGET_UTILISATION.set(used, labels)
    if soft is not None:
        metrics.BUDGET_SOFT_THRESHOLD.set(soft, labels)


@dataclass
class Gauges:
    """The periodic reading of the budget gauges and of the disputed reservations."""

    budgets: BudgetStore

    async def refresh(self) -> None:
        now = datetime.now(UTC)
        for record in await self.budgets.limits():
            slot = Slot(record.scope, record.period, window(record.period, now))
            show_usage(slot, await self.budgets.usage(slot), record.limit)
        disputed = Counter(r.tenant for r in await self.budgets.disputes())
        for tenant in (_DISPUTING | _SEEN) - set(disputed):
            metrics.RESERVATIONS_DISPUTED.set(0, {"tenant": tenant})
        for tenant, count in disputed.items():
            metrics.RESERVATIONS_DISPUTED.set(count, {"tenant": tenant})
        _DISPUTING.clear()
        _DISPUTING.update(disputed)

"""Budget decisions: windows, usage counters, admission against limits, settlement arithmetic.

Pure: no I/O, no clock (times come in as arguments), no logging. Money is integer micro-dollars.

Every window (a scope's day, month or lifetime) that has a limit keeps counters of estimates that
always add up (a window without one keeps none: its usage is folded from the reservations):
    admitted == reserved + settled + released + disputed
`settled` is what was charged, `released` the unbilled rest of an estimate. A charge above the
estimate (the upstream produced more seconds than asked) is added to `admitted` as `overrun`,
so the sum still holds. What counts against a limit is `used = reserved + settled + disputed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

Period = Literal["daily", "monthly", "lifetime"]
PERIODS: tuple[Period, ...] = ("daily", "monthly", "lifetime")
GLOBAL = "global"
_TENANT_SCOPE = re.compile(r"^tenant:([a-z0-9][a-z0-9_-]{0,62})$")
MICROS_PER_USD = 1_000_000


class BudgetInputError(ValueError):
    """A scope, period or amount that cannot be a budget; the message says what is wrong."""


# -- scopes, periods, windows --------------------------------------------------------------------


def parse_scope(text: str) -> str:
    """`global` or `tenant:<tenant>`, as given; anything else is refused."""
    if text == GLOBAL or _TENANT_SCOPE.match(text):
        return text
    raise BudgetInputError(f"scope must be 'global' or 'tenant:<tenant>', got {text!r}")


def parse_period(text: str) -> Period:
    for period in PERIODS:
        if text == period:
            return period
    raise BudgetInputError(f"period must be one of {', '.join(PERIODS)}, got {text!r}")


def scopes_of(tenant: str) -> tuple[str, str]:
    """The scopes a job of `tenant` counts against."""
    return (GLOBAL, f"tenant:{tenant}")


def window(period: Period, at: datetime) -> str:
    """The window of `period` that instant `at` falls in, by the UTC calendar."""
    if at.tzinfo is None:
        raise BudgetInputError("budget windows need an aware datetime (UTC)")
    utc = at.astimezone(UTC)
    if period == "daily":
        return utc.strftime("%Y-%m-%d")
    if period == "monthly":
        return utc.strftime("%Y-%m")
    return "lifetime"


@dataclass(frozen=True, slots=True)
class Slot:
    """One (scope, period, window) a job counts against."""

    scope: str
    period: Period
    window: str


def slots_for(tenant: str, at: datetime) -> tuple[Slot, ...]:
    """Every window a job of `tenant` admitted at `at` counts against (limited or not; only
    the limited ones keep counters)."""
    return tuple(
        Slot(scope, period, window(period, at)) for scope in scopes_of(tenant) for period in PERIODS
    )


# -- usage and limits ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """Counters of one window, in micro-dollars (and a count of jobs and of soft crossings)."""

    admitted: int = 0
    reserved: int = 0
    settled: int = 0
    released: int = 0
    disputed: int = 0
    jobs: int = 0
    soft_crossings: int = 0

    @property
    def used(self) -> int:
        return self.reserved + self.settled + self.disputed

    @property
    def balanced(self) -> bool:
        return self.admitted == self.reserved + self.settled + self.released + self.disputed


@dataclass(frozen=True, slots=True)
class Limit:
    limit_micros: int
    soft_micros: int | None = None

    def __post_init__(self) -> None:
        if self.limit_micros < 0:
            raise BudgetInputError("a limit cannot be negative")
        if self.soft_micros is not None and not 0 < self.soft_micros <= self.limit_micros:
            raise BudgetInputError("the soft threshold must be above 0 and at most the limit")


@dataclass(frozen=True, slots=True)
class Counted:
    """A slot with its current usage and its limit (None: no budget set there)."""

    slot: Slot
    usage: Usage
    limit: Limit | None


@dataclass(frozen=True, slots=True)
class Alert:
    """A soft threshold crossed upwards by an admission (the n-th crossing of that window)."""

    slot: Slot
    soft_micros: int
    limit_micros: int
    used_micros: int
    crossing: int


@dataclass(frozen=True, slots=True)
class Reserve:
    usages: tuple[Usage, ...]
    """The new usage of each counted slot, in the order given."""
    alerts: tuple[Alert, ...]


@dataclass(frozen=True, slots=True)
class Exceeded:
    slot: Slot
    limit_micros: int
    left_micros: int
    needed_micros: int

    @property
    def detail(self) -> str:
        return (
            f"the {self.slot.period} budget of {self.slot.scope} ({self.slot.window}) is "
            f"{usd(self.limit_micros)} with {usd(self.left_micros)} left; this job needs "
            f"{usd(self.needed_micros)}"
        )


def reserve(counted: tuple[Counted, ...], amount: int) -> Reserve | Exceeded:
    """Admit `amount` only if every limited slot has room; then reserve it in every slot."""
    if amount <= 0:
        raise BudgetInputError(f"a reservation must be positive, got {amount}")
    for c in counted:
        if c.limit is not None and c.usage.used + amount > c.limit.limit_micros:
            left = max(0, c.limit.limit_micros - c.usage.used)
            return Exceeded(c.slot, c.limit.limit_micros, left, amount)
    usages: list[Usage] = []
    alerts: list[Alert] = []
    for c in counted:
        after = replace(
            c.usage,
            admitted=c.usage.admitted + amount,
            reserved=c.usage.reserved + amount,
            jobs=c.usage.jobs + 1,
        )
        soft = c.limit.soft_micros if c.limit is not None else None
        if c.limit is not None and soft is not None and c.usage.used < soft <= after.used:
            after = replace(after, soft_crossings=after.soft_crossings + 1)
            alerts.append(
                Alert(c.slot, soft, c.limit.limit_micros, after.used, after.soft_crossings)
            )
        usages.append(after)
    return Reserve(tuple(usages), tuple(alerts))


# -- settlement ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Charge:
    """The upstream billed (or surely will bill) this much."""

    amount_micros: int
    why: str


@dataclass(frozen=True, slots=True)
class Release:
    """Nothing was billed: the reservation is given back."""

    why: str


@dataclass(frozen=True, slots=True)
class Dispute:
    """The upstream's fate is unknown: the estimate stays counted until someone resolves it."""

    why: str


Settlement = Charge | Release | Dispute


def settle_usage(usage: Usage, estimate: int, outcome: Settlement) -> Usage:
    """Move one job's reservation out of `reserved` by its settlement."""
    held = replace(usage, reserved=usage.reserved - estimate)
    return _close(held, estimate, outcome)


def resolve_usage(usage: Usage, estimate: int, outcome: Charge | Release) -> Usage:
    """Move one disputed job out of `disputed`, charged or released."""
    held = replace(usage, disputed=usage.disputed - estimate)
    return _close(held, estimate, outcome)


def _close(usage: Usage, estimate: int, outcome: Settlement) -> Usage:
    match outcome:
        case Dispute():
            return replace(usage, disputed=usage.disputed + estimate)
        case Release():
            return replace(usage, released=usage.released + estimate)
        case Charge(amount_micros=charged):
            overrun = max(0, charged - estimate)
            return replace(
                usage,
                admitted=usage.admitted + overrun,
                settled=usage.settled + charged,
                released=usage.released + max(0, estimate - charged),
            )


def fold(usage: Usage, estimate: int, state: str, charged: int | None) -> Usage:
    """`usage` with one more job of `estimate` counted as its reservation stands now (`state`:
    reserved, charged, released or disputed): what its admission and its settlement added to
    a counter that ran all along. Folding every reservation of a window rebuilds its counters."""
    admitted = replace(
        usage,
        admitted=usage.admitted + estimate,
        reserved=usage.reserved + estimate,
        jobs=usage.jobs + 1,
    )
    match state:
        case "charged":
            return settle_usage(admitted, estimate, Charge(charged or 0, ""))
        case "released":
            return settle_usage(admitted, estimate, Release(""))
        case "disputed":
            return settle_usage(admitted, estimate, Dispute(""))
    return admitted


KEPT_WINDOWS = 2
"""Windows a period's counter keeps: the newest and the one before (jobs admitted just before
midnight still settle into their own day)."""


def window_usage(kept: dict[str, Usage], current: str) -> Usage | None:
    """The usage of window `current` in a counter that keeps `kept`: a newer window starts
    at zero (every job of it is counted from its first); a window older than every kept one
    (a clock far behind) is None: not counted, not checked."""
    if current in kept:
        return kept[current]
    if not kept or current > max(kept):
        return Usage()
    return None


def newest(kept: dict[str, Usage]) -> dict[str, Usage]:
    """`kept` without the windows older than the newest KEPT_WINDOWS (window names sort by time)."""
    return {w: kept[w] for w in sorted(kept)[-KEPT_WINDOWS:]}


# -- dollars -------------------------------------------------------------------------------------


def parse_usd(text: str) -> int:
    """`12.5`, `$12.50`, `0.000001` -> micro-dollars, exactly (never through a float)."""
    cleaned = text.strip().removeprefix("$").replace("_", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise BudgetInputError(f"not an amount of dollars: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise BudgetInputError(f"an amount must be a finite number >= 0, got {text!r}")
    micros = value * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise BudgetInputError(f"{text!r} is finer than a micro-dollar (6 decimal places)")
    return int(micros)


def usd(micros: int) -> str:
    """Micro-dollars as dollars: $0.40, $12.345678."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_USD)
    cents = f"{frac:06d}".rstrip("0")
    return f"{sign}${whole}.{cents.ljust(2, '0')}"

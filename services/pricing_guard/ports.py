"""What pricing_guard's handlers touch: the job store, its emitter, its provider, budgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.pricing_guard.budgets import (
    Charge,
    Exceeded,
    Limit,
    Period,
    Release,
    Settlement,
    Slot,
    Usage,
)
from services.pricing_guard.records import LimitRecord, ReservationRecord, SpendEntry
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import ProviderSpec


@dataclass(frozen=True, slots=True)
class Claim:
    """A priced job asking for its estimate to be reserved."""

    tenant: str
    job_id: str
    model: str
    size: str
    seconds: int
    estimate_micros: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Reserved:
    reservation: ReservationRecord
    fresh: bool
    """False when an earlier delivery had reserved it already (nothing was counted again)."""


@dataclass(frozen=True, slots=True)
class Settled:
    reservation: ReservationRecord
    fresh: bool


class BudgetStore(Protocol):
    async def reserve(self, claim: Claim) -> Reserved | Exceeded:
        """Reserve the claim in every window it counts against, or refuse it (no change)."""
        ...

    async def settle(
        self,
        tenant: str,
        job_id: str,
        bill: Callable[[ReservationRecord], Settlement],
        outcome: str,
        at: datetime,
        *,
        admitted: bool = True,
    ) -> Settled | None: ...

    async def resolve(
        self, tenant: str, job_id: str, decision: Charge | Release, at: datetime
    ) -> Settled | None: ...

    async def set_limit(
        self, scope: str, period: Period, limit: Limit | None, at: datetime
    ) -> None: ...

    async def limits(self) -> list[LimitRecord]: ...

    async def usage(self, slot: Slot) -> Usage: ...

    async def reservation(self, tenant: str, job_id: str) -> ReservationRecord | None: ...

    async def spend(self, tenant: str | None = None) -> list[SpendEntry]: ...

    async def disputes(self) -> list[ReservationRecord]: ...

    async def open_jobs(self) -> list[tuple[str, str]]:
        """(tenant, job_id) of every reservation not settled yet."""
        ...


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: ProviderSpec
    budgets: BudgetStore

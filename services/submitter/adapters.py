"""The submitter's shared rate state in a KV bucket (clipline_rates), one key per
provider/model, changed by compare-and-set so every replica shapes one common rate; read only
when another replica changed it, written only when it changes, several changes a write."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.js.kv import KeyValue
from pydantic import TypeAdapter

from services.submitter.rates import (
    Granted,
    Limits,
    Priority,
    RateState,
    Wait,
    acquire,
    fresh,
    release,
    throttle,
)
from shared.kvcell import KvCells

T = TypeVar("T")
log = logging.getLogger("clipline.submitter")
STATE = TypeAdapter(RateState)
Decide = Callable[[RateState], tuple[RateState, T]]


class KvRates:
    """Rate slots of one provider's models, shared by all replicas. `limits` maps a model name
    (or alias) to the model whose limit it shares upstream, and that limit."""

    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        provider: str,
        limits: Callable[[str], tuple[str, Limits]],
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 64,
    ) -> None:
        self._provider = provider
        self._limits = limits
        self._clock = clock
        self._cells = KvCells(kv, _state, STATE.dump_json, max_attempts=max_attempts)

    async def acquire(
        self, model: str, job_id: str, priority: Priority, lease: float
    ) -> Granted | Wait:
        model, limits = self._limits(model)

        def take(state: RateState) -> tuple[RateState, Granted | Wait]:
            decision = acquire(state, limits, self._clock(), job_id, priority=priority, lease=lease)
            return decision.state, decision

        return await self._change(model, limits, take)

    async def release(self, model: str, job_id: str) -> None:
        model, limits = self._limits(model)
        await self._change(model, limits, lambda s: (release(s, job_id), None))

    async def throttle(self, model: str, retry_after: float | None) -> None:
        model, limits = self._limits(model)
        await self._change(
            model, limits, lambda s: (throttle(s, self._clock(), retry_after, limits), None)
        )

    async def _change(self, model: str, limits: Limits, decide: Decide[T]) -> T:
        def change(value: RateState | None) -> tuple[RateState | None, T]:
            return decide(value or fresh(self._clock()))

        return await self._cells.change(f"rate.{self._provider}.{model}", change)


def _state(key: str, value: bytes | None) -> RateState | None:
    """The stored state, or None (start afresh) when absent or unreadable: a broken value must
    not stop every create of a model for good."""
    if not value:
        return None
    try:
        return STATE.validate_json(value)
    except ValueError:
        log.warning("submitter: unreadable rate state %s: starting it afresh", key)
        return None

"""Rate shaping of upstream creates, shared by every submitter replica: decisions only.

One state per provider/model (kept in KV by the adapter, changed by compare-and-set): a token
bucket refilled at just under the upstream's RPM (so its own bucket never runs dry in steady
state), the creates in flight (each with a lease, so a crashed replica's slot comes back), and
a slow-down after a 429 that recovers over a minute. Work above the limit waits in the stream
(a delayed redelivery), it is never rejected. Priorities: a `low` job takes a token only while
the bucket keeps a reserve for `normal` and `high` ones, and `normal` keeps one for `high`.

Pure: no I/O, no clock (times are arguments, in seconds since the epoch), no logging.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
MARGIN = 0.99
"""Refill at 99% of the upstream's RPM: clocks and request timing never make us the faster."""
RECOVERY_SECONDS = 60.0
"""A 429 halves the rate; it grows back to the full rate over this long."""
MIN_SLOWDOWN = 0.05


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int
    concurrency: int
    burst_seconds: float = 2.0
    """Bucket capacity in seconds of refill: how much a quiet spell lets through at once."""

    @property
    def capacity(self) -> float:
        return max(1.0, self.rpm / 60.0 * self.burst_seconds)

    def reserve(self, priority: Priority) -> float:
        """Tokens a job of `priority` must leave in the bucket (a share kept for the higher;
        never so much that a full bucket could not serve it)."""
        share = {"high": 0.0, "normal": 0.25, "low": 0.5}[priority]
        return share * (self.capacity - 1.0)


@dataclass(frozen=True, slots=True)
class RateState:
    tokens: float
    at: float
    slowdown: float = 1.0
    blocked_until: float = 0.0
    inflight: tuple[tuple[str, float], ...] = ()
    """(job id, lease expiry) of each create in flight."""


@dataclass(frozen=True, slots=True)
class Granted:
    state: RateState


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float
    why: str
    state: RateState


def fresh(limits: Limits, now: float) -> RateState:
    return RateState(tokens=limits.capacity, at=now)


def rate(limits: Limits, state: RateState) -> float:
    """Creates per second the bucket refills at now."""
    return limits.rpm / 60.0 * MARGIN * state.slowdown


def advance(state: RateState, limits: Limits, now: float) -> RateState:
    """Refill, recover from a slow-down, drop expired leases (a crashed replica's slots)."""
    elapsed = max(0.0, now - state.at)
    tokens = min(limits.capacity, state.tokens + elapsed * rate(limits, state))
    slowdown = min(1.0, state.slowdown + elapsed / RECOVERY_SECONDS)
    inflight = tuple((job, until) for job, until in state.inflight if until > now)
    return replace(state, tokens=tokens, at=max(now, state.at), slowdown=slowdown,
                   inflight=inflight)  # fmt: skip


def acquire(
    state: RateState,
    limits: Limits,
    now: float,
    job_id: str,
    *,
    priority: Priority,
    lease: float,
) -> Granted | Wait:
    """A slot for one create of `job_id`, or how long to wait for one."""
    state = advance(state, limits, now)
    if any(job == job_id for job, _ in state.inflight):
        return Granted(state)  # this job holds a slot already (a redelivery): keep it
    if now < state.blocked_until:
        return Wait(state.blocked_until - now, "the upstream asked to wait (429)", state)
    if len(state.inflight) >= limits.concurrency:
        soonest = min(until for _, until in state.inflight)
        return Wait(max(0.05, soonest - now), f"{limits.concurrency} creates in flight", state)
    needed = 1.0 + limits.reserve(priority)
    if state.tokens < needed:
        wait = (needed - state.tokens) / rate(limits, state)
        return Wait(wait, f"{limits.rpm} requests per minute reached", state)
    taken = replace(
        state, tokens=state.tokens - 1.0, inflight=(*state.inflight, (job_id, now + lease))
    )
    return Granted(taken)


def release(state: RateState, job_id: str) -> RateState:
    """The create of `job_id` is over (answered, failed or abandoned)."""
    return replace(state, inflight=tuple((j, u) for j, u in state.inflight if j != job_id))


def throttle(state: RateState, limits: Limits, now: float, retry_after: float | None) -> RateState:
    """The upstream answered 429 anyway: empty the bucket, halve the rate, and wait as long as
    it asked (or one refill interval)."""
    state = advance(state, limits, now)
    slowed = max(MIN_SLOWDOWN, state.slowdown / 2)
    wait = retry_after if retry_after is not None else 60.0 / max(1, limits.rpm)
    return replace(
        state, tokens=0.0, slowdown=slowed, blocked_until=max(state.blocked_until, now + wait)
    )

"""Rate shaping of upstream creates, shared by every submitter replica: decisions only.

One state per provider/model (kept in KV by the adapter, changed by compare-and-set), a
generic cell rate algorithm (GCRA) that hands out *slots*: each create gets its own moment to
go, spaced at just under the upstream's RPM, with a burst of up to `capacity` after a quiet
spell (what a token bucket of that size would allow, so the upstream's own bucket never runs dry
in steady state). A slot within `horizon` seconds is reserved for the asking job, which waits
for it where it is; a job further back reserves nothing and comes back later (it waits in the
stream) at a return time of its own, spaced like the slots, so a backlog of thousands asks
about once per job, not once per slot.

Also: a cap on creates in flight (each with a lease, so a crashed replica's slot comes back), and
a slow-down after a 429 that recovers over a minute. Priorities: a `low` job may use less of the
burst than a `normal` one, and `normal` less than `high`, so when slots are scarce the higher go
first.

Pure: no I/O, no clock (times are arguments, in seconds since the epoch), no logging.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
MARGIN = 0.99
"""Slots are spaced for 99% of the upstream's RPM: timing noise never makes us the faster."""
RECOVERY_SECONDS = 60.0
"""A 429 halves the rate; it grows back to the full rate over this long."""
MIN_SLOWDOWN = 0.05
CAP_RECHECK_SECONDS = 0.5
SHARE: dict[Priority, float] = {"high": 1.0, "normal": 0.75, "low": 0.5}
"""How much of the burst each priority may use."""


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int
    concurrency: int
    burst_seconds: float = 60.0
    """Burst size in seconds of the rate: what a quiet spell lets through at once."""
    horizon: float = 10.0
    """A slot at most this far ahead is reserved for the asking job, which waits for it."""

    @property
    def capacity(self) -> float:
        return max(1.0, self.rpm / 60.0 * self.burst_seconds)


@dataclass(frozen=True, slots=True)
class RateState:
    tat: float
    """Theoretical arrival time: when the bucket would be full again."""
    queue_tat: float = 0.0
    """When the next job sent back may return: jobs beyond the horizon are given return times
    spaced like the slots, so they come back about when their turn comes, in order."""
    slowdown: float = 1.0
    at: float = 0.0
    """When the state last changed (the slow-down recovers from then)."""
    blocked_until: float = 0.0
    inflight: tuple[tuple[str, float, float], ...] = ()
    """(job id, slot, lease expiry) of each create holding a slot: in flight from its slot on
    until released, or until the lease runs out (its replica died)."""


@dataclass(frozen=True, slots=True)
class Granted:
    at: float
    """When the create may go (now, or a reserved moment within the horizon)."""
    state: RateState


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float
    why: str
    state: RateState


def fresh(now: float) -> RateState:
    return RateState(tat=now, at=now)


def interval(limits: Limits, state: RateState) -> float:
    """Seconds between two slots at the current rate."""
    return 60.0 / (limits.rpm * MARGIN * state.slowdown)


def advance(state: RateState, now: float) -> RateState:
    """Recover from a slow-down; drop expired leases (a crashed replica's slots)."""
    elapsed = max(0.0, now - state.at)
    slowdown = min(1.0, state.slowdown + elapsed / RECOVERY_SECONDS)
    inflight = tuple(entry for entry in state.inflight if entry[2] > now)
    return replace(state, slowdown=slowdown, at=max(now, state.at), inflight=inflight)


def acquire(
    state: RateState,
    limits: Limits,
    now: float,
    job_id: str,
    *,
    priority: Priority,
    lease: float,
    jitter: float | None = None,
) -> Granted | Wait:
    """A slot for one create of `job_id`: now, reserved within the horizon, or a time to come
    back. `jitter` in [0, 1) spreads jobs sent back at once (random when not given)."""
    state = advance(state, now)
    held = next((slot for job, slot, _ in state.inflight if job == job_id), None)
    if held is not None:
        return Granted(max(now, held), state)  # a redelivery keeps its slot
    started = sum(1 for _, slot, _ in state.inflight if slot <= now)
    if started >= limits.concurrency:
        # Creates are answered in seconds: look again shortly (a dead replica's slot comes
        # back when its lease runs out).
        return Wait(CAP_RECHECK_SECONDS, f"{limits.concurrency} creates in flight", state)
    step = interval(limits, state)
    tolerance = (limits.capacity - 1.0) * step * SHARE[priority]
    slot = max(now, state.blocked_until, state.tat - tolerance)
    if slot - now > limits.horizon:
        spread = random.random() if jitter is None else jitter  # noqa: S311 - not security
        turn = max(state.queue_tat, slot - limits.horizon)
        queued = replace(state, queue_tat=turn + step)
        why = "the upstream asked to wait (429)" if now < state.blocked_until else "rate limit"
        return Wait(turn - now + spread * step, f"{why}: next slot in {slot - now:.1f} s", queued)
    taken = replace(
        state,
        tat=max(state.tat, slot) + step,
        inflight=(*state.inflight, (job_id, slot, slot + lease)),
    )
    return Granted(slot, taken)


def release(state: RateState, job_id: str) -> RateState:
    """The create of `job_id` is over (answered, failed or abandoned)."""
    return replace(state, inflight=tuple(e for e in state.inflight if e[0] != job_id))


def throttle(state: RateState, now: float, retry_after: float | None, limits: Limits) -> RateState:
    """The upstream answered 429 anyway: halve the rate, wait as long as it asked (or one slot),
    and start the schedule over from then with no burst."""
    state = advance(state, now)
    slowed = replace(state, slowdown=max(MIN_SLOWDOWN, state.slowdown / 2))
    wait = retry_after if retry_after is not None else interval(limits, slowed)
    until = max(state.blocked_until, now + wait)
    tolerance = (limits.capacity - 1.0) * interval(limits, slowed)
    return replace(slowed, blocked_until=until, tat=max(state.tat, until + tolerance))

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

import math
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
MAX_BLOCK_SECONDS = 120.0
"""The longest a 429's retry-after may hold every create back (a broken or hostile header
must not stop a provider for hours)."""
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
    queue_tat: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Per priority (high, normal, low): when the next job sent back may return. Jobs beyond
    the horizon are given return times spaced like the slots, so they come back about when
    their turn comes, in order, and a high one never queues behind normal ones."""
    slowdown: float = 1.0
    at: float = 0.0
    """When the state last changed (the slow-down recovers from then)."""
    blocked_until: float = 0.0
    inflight: tuple[tuple[str, float, float], ...] = ()
    """(job id, slot, lease expiry) of each create holding a slot, reserved or going: counted
    against the cap until released, or until the lease runs out (its replica died)."""
    drained_tat: float = 0.0
    """The theoretical arrival time of the upstream's bucket as a 429 left it (empty at the
    block's end), shared by every priority with the whole burst as tolerance: after a block
    creates resume at the rate, with no burst, and no priority waits past the block for its
    own share of the burst to refill (the share is ours, not the upstream's). 0: no 429 yet."""


@dataclass(frozen=True, slots=True)
class Granted:
    at: float
    """When the create may go (now, or a reserved moment within the horizon)."""
    state: RateState
    taken: bool = True
    """False when the job already held this slot (a second delivery): only the taker releases."""


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


def tolerance(limits: Limits, priority: Priority) -> float:
    """How far ahead of its theoretical time a slot may be taken (the burst), in seconds at the
    full rate: a slow-down spaces slots out, it never shrinks or grows the burst allowance."""
    return (limits.capacity - 1.0) * 60.0 / (limits.rpm * MARGIN) * SHARE[priority]


def advance(state: RateState, now: float) -> RateState:
    """Recover from a slow-down (not while still blocked); drop expired leases."""
    elapsed = max(0.0, now - max(state.at, state.blocked_until))
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
        return Granted(max(now, held), state, taken=False)  # a redelivery: the slot is held
    step = interval(limits, state)
    spread = random.random() if jitter is None else jitter  # noqa: S311 - not security
    lane = PRIORITIES.index(priority)
    if len(state.inflight) >= limits.concurrency:
        # Every slot is reserved or going: come back in turn, spaced like the slots.
        turn = max(state.queue_tat[lane], now + CAP_RECHECK_SECONDS)
        queued = _queue(state, lane, turn + step)
        why = f"{limits.concurrency} creates in flight or reserved"
        return Wait(turn - now + spread * step, why, queued)
    slot = max(
        now,
        state.blocked_until,
        state.tat - tolerance(limits, priority),
        state.drained_tat - tolerance(limits, "high"),
    )
    if slot - now > limits.horizon:
        turn = max(state.queue_tat[lane], slot - limits.horizon)
        why = "the upstream asked to wait (429)" if now < state.blocked_until else "rate limit"
        return Wait(
            turn - now + spread * step,
            f"{why}: next slot in {slot - now:.1f} s",
            _queue(state, lane, turn + step),
        )
    taken = replace(
        state,
        tat=max(state.tat, slot) + step,
        drained_tat=max(state.drained_tat, slot) + step,
        inflight=(*state.inflight, (job_id, slot, slot + lease)),
    )
    return Granted(slot, taken)


def _queue(state: RateState, lane: int, next_turn: float) -> RateState:
    turns = list(state.queue_tat)
    turns[lane] = next_turn
    return replace(state, queue_tat=(turns[0], turns[1], turns[2]))


def release(state: RateState, job_id: str) -> RateState:
    """The create of `job_id` is over (answered, failed or abandoned)."""
    return replace(state, inflight=tuple(e for e in state.inflight if e[0] != job_id))


def throttle(state: RateState, now: float, retry_after: float | None, limits: Limits) -> RateState:
    """The upstream answered 429 anyway: wait as long as it asked (at most MAX_BLOCK_SECONDS;
    one slot when it did not say), halve the rate (once per block: the 429s of creates already
    under way count as one), and resume after the block with no burst: for every priority at
    the block's end, one slot at a time, the burst coming back as the bucket refills. (Emptying
    the priorities' own bucket instead held `normal` creates a quarter of the burst, and `low`
    half of it, past the block: 15 and 30 s with a minute's burst, whatever was asked.)"""
    state = advance(state, now)
    asked = retry_after if retry_after is not None and math.isfinite(retry_after) else None
    blocked = now < state.blocked_until
    slowed = state if blocked else replace(state, slowdown=max(MIN_SLOWDOWN, state.slowdown / 2))
    wait = (
        min(MAX_BLOCK_SECONDS, max(0.0, asked)) if asked is not None else interval(limits, slowed)
    )
    until = max(state.blocked_until, now + wait)
    burst = tolerance(limits, "high")
    drained = max(state.drained_tat, until + burst)
    return replace(
        slowed, blocked_until=until, tat=max(state.tat, until), drained_tat=drained, at=now
    )

"""Rate shaping decisions (services/submitter/rates.py), checked against the simulator's own
rate limiter as the upstream: no 429 in steady state, and the limit used, not wasted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulator.limits import Bucket
from services.submitter.rates import (
    Granted,
    Limits,
    RateState,
    Wait,
    acquire,
    fresh,
    release,
    throttle,
)

LEASE = 30.0


def drive(limits: Limits, seconds: float, step: float) -> tuple[int, int]:
    """A backlog that asks for a slot every `step` s (creates answered at once): grants, and
    how many of them the upstream's own bucket (capacity rpm, refilled over a minute) refused."""
    state, upstream = fresh(limits, 0.0), Bucket(limits.rpm, 0.0)
    granted = refused = 0
    now, n = 0.0, 0
    while now < seconds:
        decision = acquire(state, limits, now, f"job{n}", priority="normal", lease=LEASE)
        state = decision.state
        if isinstance(decision, Granted):
            granted += 1
            refused += not upstream.take(now).allowed
            state = release(state, f"job{n}")
            n += 1
        now += step
    return granted, refused


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=6, max_value=1200), st.sampled_from([0.005, 0.02, 0.1]))
def test_a_backlog_never_draws_a_429_and_uses_the_limit(rpm: int, step: float) -> None:
    limits = Limits(rpm=rpm, concurrency=10_000)
    seconds = 180.0
    granted, refused = drive(limits, seconds, step)
    assert refused == 0
    ideal = rpm / 60.0 * seconds  # what the upstream allows over the run, at its refill rate
    if step <= 60.0 / rpm / 2:  # asked at least twice as often as a slot frees
        assert granted >= 0.98 * ideal, (granted, ideal)


def test_creates_in_flight_are_capped_and_a_lease_frees_a_dead_replicas_slot() -> None:
    limits = Limits(rpm=6000, concurrency=2)
    state = fresh(limits, 0.0)
    for job, at in (("a", 0.0), ("b", 5.0)):
        decision = acquire(state, limits, at, job, priority="high", lease=10.0)
        assert isinstance(decision, Granted)
        state = decision.state
    third = acquire(state, limits, 6.0, "c", priority="high", lease=10.0)
    assert isinstance(third, Wait)
    assert "in flight" in third.why
    assert third.seconds == 4.0  # until the first lease runs out
    # "a" died without releasing: after its lease, its slot is free again
    later = acquire(third.state, limits, 10.5, "c", priority="high", lease=10.0)
    assert isinstance(later, Granted)
    again = acquire(later.state, limits, 10.6, "c", priority="high", lease=10.0)
    assert isinstance(again, Granted)  # a redelivery of a job holding a slot keeps it
    assert len(again.state.inflight) == 2


def test_low_priority_waits_while_the_bucket_keeps_room_for_higher_ones() -> None:
    limits = Limits(rpm=60, concurrency=100, burst_seconds=9)  # capacity 9 tokens
    state = RateState(tokens=4.5, at=0.0)  # below low's need (4 + 1), above normal's (2 + 1)
    assert isinstance(acquire(state, limits, 0.0, "l", priority="low", lease=LEASE), Wait)
    assert isinstance(acquire(state, limits, 0.0, "n", priority="normal", lease=LEASE), Granted)
    empty = RateState(tokens=1.0, at=0.0)
    assert isinstance(acquire(empty, limits, 0.0, "h", priority="high", lease=LEASE), Granted)
    assert isinstance(acquire(empty, limits, 0.0, "n", priority="normal", lease=LEASE), Wait)


def test_a_429_blocks_for_retry_after_then_slows_the_rate_and_recovers() -> None:
    limits = Limits(rpm=600, concurrency=100)
    state = throttle(fresh(limits, 0.0), limits, 0.0, retry_after=3.0)
    blocked = acquire(state, limits, 1.0, "x", priority="high", lease=LEASE)
    assert isinstance(blocked, Wait)
    assert blocked.seconds == 2.0
    assert "429" in blocked.why
    assert state.slowdown == 0.5
    assert isinstance(acquire(state, limits, 3.5, "x", priority="high", lease=LEASE), Granted)
    recovered = acquire(state, limits, 120.0, "y", priority="high", lease=LEASE).state
    assert recovered.slowdown == 1.0

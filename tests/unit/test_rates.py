"""Rate shaping decisions (services/submitter/rates.py), checked against the simulator's own
rate limiter as the upstream: no 429 in steady state, the limit used rather than wasted, and a
backlog that asks rarely instead of stampeding."""

from __future__ import annotations

import heapq
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulator.limits import Bucket
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

LEASE = 30.0


def run_backlog(limits: Limits, jobs: int, seconds: float) -> tuple[list[float], int, int]:
    """`jobs` jobs queued at t=0, each asking again when told to (as the stream redelivers):
    the moments their creates went, how many the upstream's own bucket refused, and how many
    times jobs asked in all."""
    state, upstream = fresh(0.0), Bucket(limits.rpm, 0.0)
    asks: list[tuple[float, int]] = [(0.0, n) for n in range(jobs)]
    heapq.heapify(asks)
    went: list[float] = []
    asked = 0
    while asks:
        now, n = heapq.heappop(asks)
        if now > seconds:
            break
        asked += 1
        decision = acquire(state, limits, now, f"j{n}", priority="normal", lease=LEASE,
                           jitter=(n % 97) / 97)  # fmt: skip
        state = decision.state
        if isinstance(decision, Wait):
            heapq.heappush(asks, (now + decision.seconds, n))
            continue
        went.append(decision.at)
        state = release(state, f"j{n}")  # answered at once
    refused = sum(not upstream.take(at).allowed for at in sorted(went))
    return went, refused, asked


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=60, max_value=600))
def test_a_backlog_draws_no_429_and_uses_the_limit(rpm: int) -> None:
    limits = Limits(rpm=rpm, concurrency=100_000)
    seconds = 180.0
    jobs = int(rpm * 4)  # more than three minutes can take
    went, refused, asked = run_backlog(limits, jobs, seconds)
    assert refused == 0
    # After the first minute (its burst is a reserve some of which normal jobs leave to high
    # ones), a backlog goes at the steady rate: at least 98% of the RPM.
    steady = sum(60.0 <= at < seconds for at in went) / ((seconds - 60.0) / 60.0)
    assert steady >= 0.98 * rpm, (steady, rpm)
    # Jobs beyond the horizon are given their own return times: a backlog asks about twice
    # per job, not once per slot per job.
    assert asked <= 3 * jobs, (asked, jobs)


def test_slots_are_spaced_and_reserved_per_job() -> None:
    limits = Limits(rpm=600, concurrency=1000, burst_seconds=1.0)  # 10 at once, then 10 a second
    state = fresh(100.0)
    slots = []
    for n in range(30):
        decision = acquire(state, limits, 100.0, f"j{n}", priority="high", lease=LEASE)
        state = decision.state
        if isinstance(decision, Granted):
            slots.append(round(decision.at - 100.0, 3))
    assert slots[:10] == [0.0] * 10  # the burst
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(slots[10:])}
    assert gaps == {round(60 / (600 * 0.99), 3)}  # then one slot per interval, at 99% of RPM
    assert max(slots) <= limits.horizon  # nothing reserved beyond the horizon


def test_creates_in_flight_are_capped_and_a_lease_frees_a_dead_replicas_slot() -> None:
    limits = Limits(rpm=6000, concurrency=2)
    state = fresh(0.0)
    for job, at in (("a", 0.0), ("b", 5.0)):
        decision = acquire(state, limits, at, job, priority="high", lease=10.0)
        assert isinstance(decision, Granted)
        state = decision.state
    third = acquire(state, limits, 6.0, "c", priority="high", lease=10.0)
    assert isinstance(third, Wait)
    assert "in flight" in third.why
    assert third.seconds == 0.5  # creates are answered in seconds: look again shortly
    assert isinstance(acquire(third.state, limits, 9.0, "c", priority="high", lease=10.0), Wait)
    later = acquire(third.state, limits, 10.5, "c", priority="high", lease=10.0)
    assert isinstance(later, Granted)  # "a" died without releasing; its lease ran out
    again = acquire(later.state, limits, 10.6, "c", priority="high", lease=10.0)
    assert isinstance(again, Granted)  # a redelivery of a job holding a slot keeps it
    assert again.at == 10.6  # its slot (10.5) has come: go now
    assert len(again.state.inflight) == 2


def first_slot(state: RateState, limits: Limits, priority: Priority) -> float:
    decision = acquire(state, limits, 0.0, "x", priority=priority, lease=LEASE, jitter=0.0)
    return decision.at if isinstance(decision, Granted) else decision.seconds + limits.horizon


def test_when_slots_are_scarce_the_higher_priority_goes_first() -> None:
    limits = Limits(rpm=60, concurrency=100, burst_seconds=20)  # one a second, 20 of burst
    busy = RateState(tat=15.0)  # most of the burst used
    high, normal, low = (first_slot(busy, limits, p) for p in ("high", "normal", "low"))
    assert high < normal < low
    idle = fresh(0.0)
    assert first_slot(idle, limits, "low") == 0.0  # with room, nobody waits


def test_a_429_blocks_for_retry_after_then_slows_and_recovers() -> None:
    limits = Limits(rpm=600, concurrency=100)
    state = throttle(fresh(0.0), 0.0, 3.0, limits)
    assert state.slowdown == 0.5
    first = acquire(state, limits, 1.0, "x", priority="high", lease=LEASE)
    assert isinstance(first, Granted)
    assert 3.0 <= first.at <= 10.0  # not before the upstream said, and with no burst
    second = acquire(first.state, limits, 1.0, "y", priority="high", lease=LEASE)
    assert isinstance(second, Granted)
    full_rate = 60 / (600 * 0.99)
    assert 1.9 * full_rate <= second.at - first.at <= 2.0 * full_rate  # about half the rate
    later = acquire(second.state, limits, 200.0, "z", priority="high", lease=LEASE)
    assert later.state.slowdown == 1.0

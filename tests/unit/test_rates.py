"""Rate shaping decisions (services/submitter/rates.py), checked against the simulator's own
rate limiter as the upstream: no 429 in steady state, the limit used rather than wasted, and a
backlog that asks rarely instead of stampeding."""

from __future__ import annotations

import heapq
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from services.simulator.limits import Bucket
from services.submitter.adapters import STATE
from services.submitter.rates import (
    MAX_BLOCK_SECONDS,
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


def test_creates_in_flight_or_reserved_are_capped_and_a_lease_frees_a_dead_replicas_slot() -> None:
    limits = Limits(rpm=60, concurrency=3)  # one slot a second, 60 of burst
    state = fresh(0.0)
    for job in ("a", "b", "c"):
        decision = acquire(state, limits, 0.0, job, priority="high", lease=10.0)
        assert isinstance(decision, Granted)
        state = decision.state
    fourth = acquire(state, limits, 1.0, "d", priority="high", lease=10.0, jitter=0.0)
    assert isinstance(fourth, Wait)
    assert "in flight" in fourth.why
    assert fourth.seconds == 0.5  # its turn to look again, spaced like the slots
    state = release(fourth.state, "a")  # one create answered: its slot is free
    d = acquire(state, limits, 2.0, "d", priority="high", lease=10.0)
    assert isinstance(d, Granted)
    state = d.state
    # "b" and "c" died without releasing: their leases run out at 10 s
    later = acquire(state, limits, 10.5, "e", priority="high", lease=10.0)
    assert isinstance(later, Granted)
    again = acquire(later.state, limits, 10.6, "e", priority="high", lease=10.0)
    assert isinstance(again, Granted)
    assert not again.taken  # a redelivery of a job holding a slot: only the taker releases it
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


def test_a_429_blocks_for_retry_after_then_goes_on_at_half_the_rate() -> None:
    limits = Limits(rpm=60, concurrency=1000)
    state = throttle(fresh(0.0), 0.0, 1.0, limits)
    # 429s of creates already under way, while blocked, do not halve it again
    state = throttle(throttle(state, 0.2, 1.0, limits), 0.4, 1.0, limits)
    assert state.slowdown == 0.5
    went, now = [], 0.0
    while now < 40.0:
        decision = acquire(state, limits, now, f"j{now}", priority="high", lease=LEASE)
        state = decision.state
        if isinstance(decision, Granted):
            went.append(decision.at)
        now += 0.25
    assert went[0] >= 1.0  # not before the upstream said
    gaps = [b - a for a, b in itertools.pairwise(went)]
    assert max(gaps) <= 2.05  # never stalled: at worst half the rate (one slot in ~2 s)
    assert min(gaps[-5:]) < 1.2  # and back near the full rate as it recovers


def test_a_retry_after_that_is_not_a_finite_time_holds_creates_back_at_most_two_minutes() -> None:
    limits = Limits(rpm=600, concurrency=100)
    for asked in (float("inf"), 10**9, float("nan"), -5.0):
        state = throttle(fresh(0.0), 0.0, asked, limits)
        assert 0.0 <= state.blocked_until <= MAX_BLOCK_SECONDS
        assert STATE.validate_json(STATE.dump_json(state)) == state  # storable as it is


def test_a_high_job_never_queues_behind_normal_ones() -> None:
    limits = Limits(rpm=60, concurrency=1000, burst_seconds=1)
    state = fresh(0.0)
    for n in range(200):  # a deep normal backlog, sent back in turn
        state = acquire(state, limits, 0.0, f"n{n}", priority="normal", lease=LEASE).state
    high = acquire(state, limits, 0.0, "h", priority="high", lease=LEASE, jitter=0.0)
    normal = acquire(state, limits, 0.0, "n", priority="normal", lease=LEASE, jitter=0.0)
    assert isinstance(normal, Wait)
    assert normal.seconds > 150  # behind the 200 normal ones
    assert isinstance(high, Granted) or high.seconds < 15


def test_after_a_429_every_priority_resumes_when_asked_with_no_burst() -> None:
    """A 429 holds creates back as long as the upstream asked, and then no longer, whatever
    the priority (before: `normal` waited a quarter of the burst past the block, `low` half);
    after the block they go one slot at a time at the halved rate, never in a burst."""
    limits = Limits(rpm=60, concurrency=1000)  # one a second, a minute's burst
    for priority in ("high", "normal", "low"):
        state = throttle(fresh(0.0), 0.0, 2.0, limits)
        went = []
        for n in range(5):  # five jobs asking at once, just after the 429
            decision = acquire(state, limits, 0.1, f"j{n}", priority=priority, lease=LEASE)
            state = decision.state
            if isinstance(decision, Granted):
                went.append(decision.at)
        assert went, priority
        assert went[0] == 2.0, priority  # exactly when asked: not before, not later
        gaps = [b - a for a, b in itertools.pairwise(went)]
        assert all(gap >= 2.0 for gap in gaps), (priority, gaps)  # half the rate, no burst


def test_after_a_429_the_upstream_bucket_it_emptied_refuses_nothing() -> None:
    """The upstream's own bucket, emptied by the time of the 429, refills at its rate: the
    creates that follow the block, of mixed priorities, never outrun it."""
    limits = Limits(rpm=60, concurrency=1000)
    upstream = Bucket(limits.rpm, 0.0)
    while upstream.take(0.0).allowed:  # drained: that is why it answered 429
        pass
    state = throttle(fresh(0.0), 0.0, 1.0, limits)
    went: list[float] = []
    now = 0.0
    priorities: list[Priority] = ["low", "normal", "high"]
    while now < 90.0:
        decision = acquire(
            state, limits, now, f"j{now}", priority=priorities[int(now * 4) % 3], lease=LEASE
        )
        state = decision.state
        if isinstance(decision, Granted):
            went.append(decision.at)
            state = release(state, f"j{now}")
        now += 0.25
    assert went
    assert went[0] >= 1.0
    assert sum(not upstream.take(at).allowed for at in sorted(went)) == 0


def test_a_rate_state_stored_before_drained_tat_still_loads() -> None:
    stored = (
        b'{"tat": 5.0, "queue_tat": [0, 0, 0], "slowdown": 1.0, "at": 5.0, '
        b'"blocked_until": 0.0, "inflight": []}'
    )
    assert STATE.validate_json(stored).drained_tat == 0.0

"""Budget arithmetic (services/pricing_guard/budgets.py) and the billing policy, by properties:
UTC windows at day and month rollovers, sums that always add up, limits never overshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.pricing_guard.budgets import (
    BudgetInputError,
    Charge,
    Counted,
    Dispute,
    Exceeded,
    Limit,
    Release,
    Reserve,
    Settlement,
    Slot,
    Usage,
    fold,
    newest,
    parse_scope,
    parse_usd,
    reserve,
    resolve_usage,
    settle_usage,
    slots_for,
    usd,
    window,
    window_usage,
)
from services.pricing_guard.domain import Ending, bill

instants = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]),
)


@given(instants)
def test_windows_follow_the_utc_calendar_whatever_the_offset(at: datetime) -> None:
    utc = at.astimezone(UTC)
    assert window("daily", at) == f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
    assert window("monthly", at) == f"{utc.year:04d}-{utc.month:02d}"
    assert window("lifetime", at) == "lifetime"


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
def test_the_last_microsecond_of_a_utc_day_and_the_first_of_the_next_are_apart(
    naive: datetime,
) -> None:
    midnight = datetime(naive.year, naive.month, naive.day, tzinfo=UTC) + timedelta(days=1)
    before, after = midnight - timedelta(microseconds=1), midnight
    assert window("daily", before) != window("daily", after)
    assert (window("monthly", before) != window("monthly", after)) == (after.day == 1)
    assert window("lifetime", before) == window("lifetime", after)


def test_year_end_rolls_day_and_month() -> None:
    last = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    first = last + timedelta(microseconds=1)
    assert (window("daily", last), window("daily", first)) == ("2026-12-31", "2027-01-01")
    assert (window("monthly", last), window("monthly", first)) == ("2026-12", "2027-01")
    # 10:00 on Jan 1 in UTC+14 is still Dec 31 in UTC: the UTC window counts
    kiribati = datetime(2027, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=14)))
    assert window("daily", kiribati) == "2026-12-31"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(BudgetInputError):
        window("daily", datetime(2026, 12, 2))


def test_every_job_counts_against_global_and_its_tenant_in_three_periods() -> None:
    slots = slots_for("acme", datetime(2026, 12, 2, 15, tzinfo=UTC))
    assert {(s.scope, s.period, s.window) for s in slots} == {
        ("global", "daily", "2026-12-02"),
        ("global", "monthly", "2026-12"),
        ("global", "lifetime", "lifetime"),
        ("tenant:acme", "daily", "2026-12-02"),
        ("tenant:acme", "monthly", "2026-12"),
        ("tenant:acme", "lifetime", "lifetime"),
    }


@given(st.integers(min_value=0, max_value=10**15))
def test_dollars_round_trip_exactly(micros: int) -> None:
    assert parse_usd(usd(micros)) == micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [("12.5", 12_500_000), ("$0.40", 400_000), ("0.000001", 1), ("1_000", 1_000_000_000)],
)
def test_dollars_parse(text: str, micros: int) -> None:
    assert parse_usd(text) == micros


@pytest.mark.parametrize("text", ["0.0000001", "-1", "nan", "inf", "ten", ""])
def test_bad_dollars_are_refused(text: str) -> None:
    with pytest.raises(BudgetInputError):
        parse_usd(text)


@pytest.mark.parametrize("text", ["tenant:", "tenant:ACME", "team:x", "global:", "Global"])
def test_bad_scopes_are_refused(text: str) -> None:
    with pytest.raises(BudgetInputError):
        parse_scope(text)


def test_soft_threshold_must_lie_within_the_limit() -> None:
    with pytest.raises(BudgetInputError):
        Limit(100, soft_micros=101)
    with pytest.raises(BudgetInputError):
        Limit(-1)


# -- the sums ------------------------------------------------------------------------------------

SLOT = Slot("global", "daily", "2026-12-02")
outcomes = st.one_of(
    st.builds(Release, st.just("r")),
    st.builds(Dispute, st.just("d")),
    st.builds(Charge, st.integers(min_value=0, max_value=5_000_000), st.just("c")),
)
ops = st.lists(
    st.tuples(st.integers(min_value=1, max_value=3_000_000), outcomes, st.booleans()),
    max_size=60,
)


@given(st.integers(min_value=0, max_value=50_000_000), ops)
def test_admitted_always_equals_reserved_settled_released_disputed(
    limit: int, steps: list[tuple[int, Settlement, bool]]
) -> None:
    """Random admissions, settlements by any outcome and dispute resolutions, in order: the
    window balances after every step, and no admission ever takes `used` past the limit."""
    usage, held = Usage(), []  # held: estimates of admitted jobs not settled yet
    for amount, outcome, settle_one in steps:
        decision = reserve((Counted(SLOT, usage, Limit(limit)),), amount)
        if isinstance(decision, Reserve):
            assert decision.usages[0].used <= limit  # admission never overshoots
            usage = decision.usages[0]
            held.append(amount)
        else:
            assert isinstance(decision, Exceeded)
            assert usage.used + amount > limit
            assert decision.left_micros == max(0, limit - usage.used)
        if settle_one and held:
            estimate = held.pop(0)
            usage = settle_usage(usage, estimate, outcome)
            if isinstance(outcome, Dispute):  # resolved later, as charged or released
                usage = resolve_usage(usage, estimate, Release("admin"))
        assert usage.balanced, usage
        assert min(usage.reserved, usage.settled, usage.released, usage.disputed) >= 0
    assert usage.reserved == sum(held)


@given(ops)
def test_folding_each_reservation_as_it_stands_equals_the_counter_that_ran_all_along(
    steps: list[tuple[int, Settlement, bool]],
) -> None:
    """What a limit set mid-window starts from: the reservations folded by their state now
    are the counters admission and settlement would have kept (soft crossings aside)."""
    counter = Usage()
    jobs: list[tuple[int, str, int | None]] = []  # estimate, state now, charged
    for amount, outcome, settle_one in steps:
        decision = reserve((Counted(SLOT, counter, None),), amount)
        assert isinstance(decision, Reserve)
        counter = decision.usages[0]
        jobs.append((amount, "reserved", None))
        still_open = [i for i, job in enumerate(jobs) if job[1] == "reserved"]
        if settle_one and still_open:
            estimate = jobs[still_open[0]][0]
            counter = settle_usage(counter, estimate, outcome)
            match outcome:
                case Charge(amount_micros=charged):
                    jobs[still_open[0]] = (estimate, "charged", charged)
                case Release():
                    jobs[still_open[0]] = (estimate, "released", 0)
                case Dispute():
                    jobs[still_open[0]] = (estimate, "disputed", None)
    folded = Usage()
    for job in jobs:
        folded = fold(folded, *job)
    assert folded == counter


def test_a_counter_keeps_the_newest_windows_and_counts_no_older_one() -> None:
    kept = {"2026-12-06": Usage(jobs=1), "2026-12-07": Usage(jobs=2)}
    assert window_usage(kept, "2026-12-07") == Usage(jobs=2)
    assert window_usage(kept, "2026-12-08") == Usage()  # a new day starts at zero
    assert window_usage(kept, "2026-12-05") is None  # older than kept: not counted
    assert window_usage({}, "2026-12-05") == Usage()
    assert newest({**kept, "2026-12-08": Usage()}) == {
        "2026-12-07": Usage(jobs=2),
        "2026-12-08": Usage(),
    }


@given(
    st.lists(st.integers(min_value=1, max_value=1_000_000), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=20_000_000),
)
def test_reservation_is_all_windows_or_none(amounts: list[int], tight: int) -> None:
    """Two windows, one limited: every admission is counted in both or in neither."""
    daily, lifetime = Usage(), Usage()
    for amount in amounts:
        counted = (
            Counted(SLOT, daily, Limit(tight)),
            Counted(Slot("global", "lifetime", "lifetime"), lifetime, None),
        )
        decision = reserve(counted, amount)
        if isinstance(decision, Reserve):
            daily, lifetime = decision.usages
        assert daily == lifetime
    assert daily.used <= tight


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_soft_alert_fires_exactly_when_crossing(amount: int, before: int) -> None:
    limit = Limit(10**10, soft_micros=5 * 10**8)
    decision = reserve((Counted(SLOT, Usage(admitted=before, reserved=before), limit),), amount)
    assert isinstance(decision, Reserve)
    crossed = before < 5 * 10**8 <= before + amount
    assert len(decision.alerts) == int(crossed)


# -- billing policy --------------------------------------------------------------------------


def ending(status: str, reached: set[str], reason: str | None = None, stage: str | None = None,
           produced: int | None = None, may_exist: bool | None = None) -> Ending:  # fmt: skip
    return Ending(status, reason, stage, frozenset(reached), 1_200_000, 12, produced, may_exist)


@given(st.integers(min_value=1, max_value=60))
def test_completed_is_billed_per_second_produced(produced: int) -> None:
    settlement = bill(ending("completed", {"submitted", "generated"}, produced=produced))
    assert settlement == Charge(100_000 * produced, f"{produced} s produced")


def test_completed_without_a_reported_duration_is_billed_as_asked() -> None:
    assert bill(ending("completed", {"submitted", "generated"})) == Charge(
        1_200_000, "12 s produced"
    )


def test_nothing_sent_upstream_is_released_and_an_unknown_fate_is_disputed() -> None:
    assert isinstance(bill(ending("failed", {"admitted"}, "retries_exhausted", "submitter")),
                      Release)  # fmt: skip
    assert isinstance(bill(ending("cancelled", {"admitted"})), Release)
    assert isinstance(bill(ending("timed_out", {"submitting"}, "submit_timeout", "submitter")),
                      Dispute)  # fmt: skip
    assert isinstance(bill(ending("cancelled", {"submitting", "submitted"})), Charge)


def test_the_records_own_word_on_a_create_decides_before_its_history() -> None:
    back_in_line = {"admitted", "submitting"}  # a 429 sent it back: `submitting` stays
    timed_out = ("timed_out", back_in_line, "submit_timeout", "submitter")
    # The record says nothing could exist (429, not sent, refused): released.
    assert isinstance(bill(ending(*timed_out, may_exist=False)), Release)
    # It says a create may exist (in flight, 5xx, answer lost): disputed.
    assert isinstance(bill(ending(*timed_out, may_exist=True)), Dispute)
    # A record from before the field: the history decides, as it always did.
    assert isinstance(bill(ending(*timed_out, may_exist=None)), Dispute)
    assert isinstance(bill(ending("failed", {"admitted"}, "retries_exhausted", "submitter",
                                  may_exist=None)), Release)  # fmt: skip
    # An upstream job that surely exists is never released on the record's say.
    sunk = ending("cancelled", {"submitting", "submitted"}, may_exist=False)
    assert isinstance(bill(sunk), Charge)
    lost = ending("failed", {"submitting", "submitted"}, "upstream_lost", "poller", may_exist=False)
    assert isinstance(bill(lost), Dispute)
    assert isinstance(bill(ending("failed", {"submitting"}, "create_ambiguous", "submitter",
                                  may_exist=True)), Dispute)  # fmt: skip


def test_an_asset_that_expired_before_it_was_kept_is_charged_what_was_produced() -> None:
    expired = ending("failed", {"submitted", "generating"}, "asset_expired", "poller", produced=8)
    assert bill(expired) == Charge(800_000, "8 s produced")
    # another upstream-reported failure at the same point is not billed
    failed = ending("failed", {"submitted", "generating"}, "generation_failed", "poller")
    assert isinstance(bill(failed), Release)

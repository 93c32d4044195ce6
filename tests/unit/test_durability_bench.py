"""bench/durability.py's arithmetic: which stacks it runs, what a node's /varz must show for a
setting, and the medians and same-round ratios it reports."""

import pytest

from bench.durability import (
    DEFAULT_INTERVAL_NS,
    Burst,
    Killed,
    Measured,
    Probe,
    Setting,
    duration_ns,
    parse_settings,
    runs_setting,
    summarise,
)
from clipline.servers import ServerError


def test_settings_default_first_on_each_node_count() -> None:
    assert parse_settings("default,always", "1,3") == [
        Setting(1, None), Setting(1, "always"), Setting(3, None), Setting(3, "always"),
    ]  # fmt: skip


def test_the_one_node_default_is_always_measured() -> None:
    """Every ratio is against it."""
    assert parse_settings("always", "3") == [
        Setting(1, None), Setting(1, "always"), Setting(3, None), Setting(3, "always"),
    ]  # fmt: skip
    assert parse_settings("10s, always ,10s", "1") == [
        Setting(1, None), Setting(1, "10s"), Setting(1, "always"),
    ]  # fmt: skip


def test_a_bad_setting_fails_before_any_stack_starts() -> None:
    with pytest.raises(ServerError, match="sync interval"):
        parse_settings("sometimes", "1")
    with pytest.raises(ValueError, match="1 or 3"):
        parse_settings("always", "2")


def test_durations_as_varz_reports_them() -> None:
    assert duration_ns("10s") == 10 * 10**9
    assert duration_ns("500ms") == 500 * 10**6
    assert duration_ns("2m") == DEFAULT_INTERVAL_NS
    assert duration_ns("1h") == 3600 * 10**9
    assert duration_ns("always") is None
    with pytest.raises(ValueError, match="always"):
        duration_ns("10 seconds")


# /varz jetstream.config as nats-server 2.15 reports it (sync_always only when set).
DEFAULT_VARZ = {"sync_interval": DEFAULT_INTERVAL_NS, "strict": True}
ALWAYS_VARZ = {"sync_interval": DEFAULT_INTERVAL_NS, "sync_always": True}
TEN_SECONDS_VARZ = {"sync_interval": 10 * 10**9}


def test_a_node_runs_the_setting_its_varz_shows() -> None:
    assert runs_setting(DEFAULT_VARZ, None)
    assert runs_setting(ALWAYS_VARZ, "always")
    assert runs_setting(TEN_SECONDS_VARZ, "10s")
    assert runs_setting(DEFAULT_VARZ, "2m")


def test_a_node_running_another_setting_is_caught() -> None:
    assert not runs_setting(DEFAULT_VARZ, "always")
    assert not runs_setting(ALWAYS_VARZ, None)  # same interval, but syncing every write
    assert not runs_setting(TEN_SECONDS_VARZ, None)
    assert not runs_setting(DEFAULT_VARZ, "10s")
    assert not runs_setting({}, None)


def measured(setting: Setting, rate: float, killed: Killed | None = None) -> Measured:
    probe = Probe([rate / 100] * 10, rate * 10, rate * 20)
    return Measured(setting, probe, Burst(500, rate * 2, rate, 500 / rate), killed)


def test_ratios_are_against_the_same_rounds_default_and_then_the_median() -> None:
    base, always = Setting(1, None), Setting(1, "always")
    rounds = [  # the machine slower in round 2: each round's ratio is still 0.5
        {base: measured(base, 60.0, Killed(2000, 0)), always: measured(always, 30.0)},
        {base: measured(base, 20.0), always: measured(always, 10.0)},
        {base: measured(base, 40.0), always: measured(always, 24.0)},
    ]
    row = summarise(rounds, always)
    assert row.x_completed == pytest.approx(0.5)  # median of 0.5, 0.5, 0.6
    assert row.x_admitted == pytest.approx(0.5)
    assert row.x_writes == pytest.approx(0.5)
    assert row.completed == 24.0  # median of 30, 10, 24
    assert row.admitted == 48.0
    assert row.killed is None  # killed only where measured
    assert summarise(rounds, base).killed == Killed(2000, 0)
    assert summarise(rounds, base).x_completed == 1.0

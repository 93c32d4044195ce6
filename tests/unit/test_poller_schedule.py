"""The poller's schedule: no look while a job surely runs, the first near its expected
completion (learned per kind of job, seeded from the registry), then backoff with jitter and a
cap; the upstream's openai-poll-after-ms as the earliest next look; never past the deadline."""

from __future__ import annotations

import itertools

import pytest

from services.poller.domain import PollPolicy, worth_announcing
from services.poller.schedule import (
    KEEP_SAMPLES,
    MIN_SAMPLES,
    STAMP_SLACK,
    Durations,
    after_look,
    expected_seconds,
    first_look,
    observe,
)
from shared.registry import RegistryError, load_registry, parse_registry

POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3600.0)


def looks(policy: PollPolicy, expected: float, done_at: float, draw: float = 0.5) -> list[float]:
    """When (seconds after submission) a job finishing at `done_at` is looked at."""
    waited = first_look(policy, waited=0.0, expected=expected) or 0.0
    times = [waited]
    while waited < done_at:
        waited += after_look(policy, waited=waited, expected=expected, hint=None, draw=draw)
        times.append(waited)
    return times


def test_no_look_before_the_expected_completion() -> None:
    assert first_look(POLICY, waited=0.0, expected=600.0) == 600.0
    assert first_look(POLICY, waited=590.0, expected=600.0) == pytest.approx(10.0)
    assert first_look(POLICY, waited=600.0, expected=600.0) is None
    assert first_look(POLICY, waited=0.0, expected=0.0) is None  # nothing known: look now


def test_a_job_done_when_expected_costs_one_get_and_a_little_late_one_two() -> None:
    assert looks(POLICY, expected=600.0, done_at=599.0) == [600.0]
    assert looks(POLICY, expected=600.0, done_at=603.0) == [600.0, 605.0]


def test_a_late_job_is_looked_at_with_doubling_waits_up_to_the_cap() -> None:
    times = looks(POLICY, expected=20.0, done_at=60.0)
    waits = [b - a for a, b in itertools.pairwise(times)]
    assert waits[:3] == pytest.approx([2.0, 2.0, 4.0])  # a tenth of 20 s, then as overdue
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))
    slow = looks(POLICY, expected=20.0, done_at=600.0)
    assert max(b - a for a, b in itertools.pairwise(slow)) == pytest.approx(30.0)
    assert len(slow) < 30  # a job 30x late: a few looks, not one per hint


def test_the_first_step_is_a_tenth_of_the_expected_time_within_min_and_default() -> None:
    assert after_look(POLICY, waited=600.0, expected=600.0, hint=None, draw=0.5) == 5.0
    assert after_look(POLICY, waited=1.0, expected=1.0, hint=None, draw=0.5) == 0.2


def test_jitter_spreads_waits_by_a_tenth() -> None:
    low = after_look(POLICY, waited=20.0, expected=10.0, hint=None, draw=0.0)
    high = after_look(POLICY, waited=20.0, expected=10.0, hint=None, draw=0.999)
    assert low == pytest.approx(9.0)
    assert high == pytest.approx(11.0, abs=0.01)


def test_the_upstreams_poll_after_is_the_earliest_next_look_within_the_cap() -> None:
    assert after_look(POLICY, waited=10.0, expected=10.0, hint=4.0, draw=0.5) == 4.0
    assert after_look(POLICY, waited=10.0, expected=10.0, hint=0.1, draw=0.5) == 1.0
    assert after_look(POLICY, waited=10.0, expected=10.0, hint=600.0, draw=0.5) == 30.0


def test_no_wait_outlasts_the_deadline() -> None:
    assert after_look(POLICY, waited=3590.0, expected=10.0, hint=None, draw=0.5) == 10.5
    assert first_look(POLICY, waited=0.0, expected=5000.0) == 3600.5
    assert first_look(POLICY, waited=3601.0, expected=5000.0) is None  # look: it times out


def test_expected_time_is_the_registry_guess_until_enough_jobs_finished() -> None:
    learned = Durations()
    for took in (60.0, 61.0):
        learned = observe(learned, took, f"video_{took}")
    assert len(learned.samples) == MIN_SAMPLES - 1
    assert expected_seconds(learned, seed=94.0) == 94.0
    assert observe(learned, 61.0, "video_61.0") == learned  # a video counts once
    learned = observe(learned, 62.0, "video_62")
    assert expected_seconds(learned, seed=94.0) == 62.0 + STAMP_SLACK


def test_expected_time_is_a_high_quantile_of_recent_jobs() -> None:
    learned = Durations()
    for took in range(1, 11):  # 1..10 s
        learned = observe(learned, float(took), f"video_{took}")
    assert expected_seconds(learned, seed=0.0) == 8.0 + STAMP_SLACK  # 8 of 10 done by then
    for n in range(KEEP_SAMPLES):  # the upstream got faster: old samples age out
        learned = observe(learned, 3.0, f"video_fast_{n}")
    assert len(learned.samples) == len(learned.videos) == KEEP_SAMPLES
    assert expected_seconds(learned, seed=0.0) == 3.0 + STAMP_SLACK


def test_progress_is_announced_when_generation_starts_and_in_steps() -> None:
    assert worth_announcing(started=False, recorded=0, progress=0)
    assert not worth_announcing(started=True, recorded=40, progress=49)
    assert worth_announcing(started=True, recorded=40, progress=50)
    assert not worth_announcing(started=True, recorded=40, progress=30)


def test_the_registry_seeds_generation_times_per_provider_and_model() -> None:
    registry = load_registry()
    openai, simulator = registry.provider("openai"), registry.provider("simulator")
    pro = openai.model("sora-2-pro")
    sora = openai.model("sora-2")
    assert pro is not None
    assert sora is not None
    assert pro.generation.expected_seconds(8) > sora.generation.expected_seconds(8)
    assert sora.generation.expected_seconds(12) > sora.generation.expected_seconds(4)
    sim = simulator.model("sora-2")
    assert sim is not None  # the simulator's own timeline, not OpenAI's
    assert sim.generation.expected_seconds(8) == 6.5


BASE = """
[providers.p]
description = "p"
default_rpm = 1
default_concurrency = 1
{extra}
[providers.p.models.m]
sizes = ["1x1"]
seconds = [4]
{model}
"""


def test_generation_times_are_validated_with_the_place_named() -> None:
    spec = parse_registry(
        BASE.format(extra="default_generation = { base_seconds = 5 }", model="")
    ).provider("p")
    assert spec.models["m"].generation.expected_seconds(4) == 5 + 10 * 4  # per second: default
    own = parse_registry(
        BASE.format(extra="", model="generation = { base_seconds = 1, per_video_second = 2 }")
    )
    assert own.provider("p").models["m"].generation.expected_seconds(4) == 9
    for bad in ("generation = 5", "generation = { base_seconds = -1 }",
                "generation = { base_seconds = true }", "generation = { speed = 1 }"):  # fmt: skip
        with pytest.raises(RegistryError, match="model 'm'"):
            parse_registry(BASE.format(extra="", model=bad))

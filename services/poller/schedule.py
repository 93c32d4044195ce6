"""When to look at a followed job next. Pure: no I/O, no clock (callers pass how long the job
has waited), no randomness (callers pass a uniform draw for the jitter).

A look is a paid-for upstream GET, and generation takes minutes, so the poller does not look
while the job surely runs: the first look is made near the expected completion (learned from
the durations of finished jobs of the same model, size and seconds, seeded from the registry),
then looks back off (each wait about as long as the job is already overdue, with jitter, up to a
cap) so a slow job costs a few GETs, not one per interval. With webhooks on, the upstream says
when a job ends, and polling is only the safety net: its first look waits the safety interval
past the expected completion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.poller.domain import PollPolicy

MIN_SAMPLES = 3
"""Finished jobs of a kind before their durations replace the registry's guess."""
KEEP_SAMPLES = 32
"""The most recent durations kept per kind (the upstream's speed drifts: recent ones count)."""
QUANTILE = 0.8
"""Expected completion: this share of recent jobs of the kind had finished by then."""
STAMP_SLACK = 0.5
"""The upstream's created_at/completed_at are whole seconds: a duration is off by up to one."""
STEP_SHARE = 0.1
"""The first wait past the expected completion, as a share of the expected duration."""
JITTER = 0.1
"""Every wait is stretched or shrunk by up to this share, so jobs do not look in lockstep."""
DEADLINE_SLACK = 0.5


@dataclass(frozen=True, slots=True)
class Durations:
    """Recent generation times (seconds) of one kind of job: model, size and seconds; and the
    upstream videos they were seen on (a video counts once)."""

    samples: tuple[float, ...] = ()
    videos: tuple[str, ...] = ()


def observe(durations: Durations, seconds: float, video_id: str) -> Durations:
    """`durations` with one more finished video's time (the oldest beyond KEEP_SAMPLES
    dropped); unchanged when that video was already counted (a webhook and a poll both saw it
    end, or a redelivery)."""
    if video_id in durations.videos:
        return durations
    samples = (*durations.samples, round(seconds, 1))[-KEEP_SAMPLES:]
    videos = (*durations.videos, video_id)[-KEEP_SAMPLES:]
    return Durations(samples, videos)


def expected_seconds(durations: Durations, seed: float) -> float:
    """How long after submission a job of the kind is expected to be done: the QUANTILE of its
    recent durations once there are MIN_SAMPLES of them, else the registry's `seed`."""
    if len(durations.samples) < MIN_SAMPLES:
        return seed
    ordered = sorted(durations.samples)
    return ordered[math.ceil(QUANTILE * len(ordered)) - 1] + STAMP_SLACK


def _target(policy: PollPolicy, expected: float) -> float:
    """When (seconds after submission) polling should first look."""
    return expected + (policy.safety_delay or 0.0)


def _within_deadline(policy: PollPolicy, waited: float, delay: float) -> float:
    """`delay`, but never past the job's deadline (it is then ended on time)."""
    return max(policy.min_delay, min(delay, policy.deadline - waited + DEADLINE_SLACK))


def first_look(policy: PollPolicy, *, waited: float, expected: float) -> float | None:
    """Seconds to wait before looking at all (no GET yet), or None: look now."""
    early = _target(policy, expected) - waited
    if early <= 0 or waited > policy.deadline:
        return None
    return _within_deadline(policy, waited, early)


def after_look(
    policy: PollPolicy,
    *,
    waited: float,
    expected: float,
    hint: float | None,
    draw: float,
) -> float:
    """Seconds until the next look at a job still running `waited` s after submission.

    Past the target (the expected completion, plus the safety interval with webhooks) the wait
    is as long as the job is already overdue, at least one step and at most the cap: looks at
    target + s, + 2s, + 4s... The upstream's openai-poll-after-ms (`hint`) is honoured as the
    earliest next look; `draw` (uniform in [0, 1)) jitters the wait."""
    target = _target(policy, expected)
    if policy.safety_delay is not None:
        step = policy.safety_delay
        cap = max(policy.max_delay, policy.safety_delay)
    else:
        step = min(policy.default_delay, max(policy.min_delay, STEP_SHARE * expected))
        cap = policy.max_delay
    delay = min(cap, max(step, waited - target))
    delay *= 1 - JITTER + 2 * JITTER * draw
    delay = max(delay, target - waited, min(hint or 0.0, cap))
    return _within_deadline(policy, waited, delay)

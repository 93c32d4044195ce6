"""The timing decisions that set how long a job takes under upstream faults (bench/faults.py):
the delivery backoff and its per-consumer cap, the submitter's cap for failed creates, and a
poller look trying a failed retrieve again within itself."""

from __future__ import annotations

import math

import pytest

from services.poller.domain import (
    LOOK_RETRY_SECONDS,
    MAX_LOOK_RETRY_AFTER,
    PollPolicy,
    look_again,
)
from services.submitter.app import build_router
from services.submitter.domain import CREATE_RETRY_CAP_SECONDS
from shared.contracts import JobAdmittedV1
from shared.messaging import RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, retry_delay

POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3600.0, look_tries=3)


def test_the_delivery_backoff_doubles_up_to_the_consumers_cap() -> None:
    assert [retry_delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert [retry_delay(n, 8.0) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert retry_delay(10**6) == RETRY_CAP_SECONDS  # no overflow however many errors
    assert retry_delay(0) == RETRY_BASE_SECONDS


def test_failed_creates_back_off_no_longer_than_the_official_sdk() -> None:
    """Five 5xx in a row cost 15.5 s of backoff at most (0.5 + 1 + 2 + 4 + 8), not 31.5 s
    (the house cap of 30 s let the sixth wait 16 s); other consumers keep the house cap."""
    router = build_router(max_attempts=10)
    admitted = router.consumers[JobAdmittedV1.durable("submitter")]
    assert admitted.retry_cap == CREATE_RETRY_CAP_SECONDS == 8.0
    assert sum(retry_delay(n, admitted.retry_cap) for n in range(1, 7)) == 23.5
    others = [c for name, c in router.consumers.items() if c is not admitted]
    assert others
    assert all(c.retry_cap == RETRY_CAP_SECONDS for c in others)


def test_a_failed_retrieve_is_tried_again_soon_within_the_look() -> None:
    waits = [look_again(POLICY, n, rate_limited=False, retry_after=None) for n in (1, 2, 3)]
    assert waits == [LOOK_RETRY_SECONDS, 2 * LOOK_RETRY_SECONDS, None]  # three tries at most


def test_without_look_tries_a_failed_look_ends_at_once() -> None:
    single = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3600.0)
    assert look_again(single, 1, rate_limited=False, retry_after=None) is None
    assert look_again(single, 1, rate_limited=True, retry_after=0.5) is None


@pytest.mark.parametrize(
    ("asked", "wait"),
    [
        (1.0, 1.0),  # exactly what the upstream asked: not sooner, not later
        (0.0, 0.0),
        (MAX_LOOK_RETRY_AFTER, MAX_LOOK_RETRY_AFTER),
        (MAX_LOOK_RETRY_AFTER + 0.1, None),  # long: the look ends Throttled (a durable timer)
        (None, None),  # said nothing: the look ends Throttled with the policy's delay
        (math.inf, None),
        (math.nan, None),
    ],
)
def test_a_429_within_a_look_waits_exactly_what_it_asked_or_ends_the_look(
    asked: float | None, wait: float | None
) -> None:
    assert look_again(POLICY, 1, rate_limited=True, retry_after=asked) == wait

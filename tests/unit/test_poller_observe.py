"""The poller's followed jobs and their overdue count (services/poller/observe.py)."""

from __future__ import annotations

from services.poller.observe import PollerObserver, overdue_count


def test_overdue_is_past_expected_plus_grace() -> None:
    now = [1000.0]
    observer = PollerObserver("p", grace=60.0, clock=lambda: now[0])
    observer.following(("t", "job_a"), running_for=0.0, expected=100.0)  # due at 1160
    observer.following(("t", "job_b"), running_for=500.0, expected=100.0)  # due at 660
    assert observer.counts() == (2, 1)
    now[0] = 1161.0
    assert observer.counts() == (2, 2)
    observer.moved_on(("t", "job_b"))
    observer.moved_on(("t", "job_unknown"))  # nothing to forget: fine
    assert observer.counts() == (1, 1)


def test_a_job_seen_again_is_counted_once_with_its_latest_due_time() -> None:
    observer = PollerObserver("p", grace=0.0, clock=lambda: 100.0)
    observer.following(("t", "job_a"), running_for=50.0, expected=10.0)
    observer.following(("t", "job_a"), running_for=50.0, expected=600.0)  # learned: longer
    assert observer.counts() == (1, 0)


def test_the_oldest_are_forgotten_past_the_limit() -> None:
    observer = PollerObserver("p", clock=lambda: 0.0, limit=2)
    for n in range(3):
        observer.following(("t", f"job_{n}"), running_for=0.0, expected=1.0)
    assert observer.counts() == (2, 0)


def test_overdue_count() -> None:
    assert overdue_count([], 5.0) == 0
    assert overdue_count([1.0, 5.0, 9.0], 5.0) == 1  # due exactly now: not yet

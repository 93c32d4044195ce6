"""What the poller tells its metrics: the jobs it follows (clipline.poller.waiting) and those
past their expected generation time plus a grace (clipline.poller.overdue: the stuck-job
alert's), each look's outcome, each webhook's, and how long finished jobs took upstream.

The followed jobs are this process's own memory (a job is in it from its first `submitted`
delivery here until a delivery or a webhook's look here moves it past following); a job
another replica follows is counted by that one. The gauges are set every few seconds, so a job
that stops moving (the upstream stuck, no delivery coming for a while) turns overdue on time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from shared import metrics
from shared.messaging import periodically

REPORT_SECONDS = 2.0
"""How often the waiting and overdue gauges are set (Prometheus scrapes every 15 s)."""
OVERDUE_GRACE_SECONDS = 300.0
"""CLIPLINE_POLL_OVERDUE_GRACE_SECONDS's default: a job is overdue this long past its
model's expected generation time."""
MAX_WATCHED = 100_000
"""Jobs remembered at most (as many as the consumer may hold pending, handlers.MAX_FOLLOWED);
the oldest forgotten first."""

JobKey = tuple[str, str]


def overdue_count(dues: list[float], now: float) -> int:
    """How many of the jobs whose expected end (plus grace) is `dues` are past it at `now`."""
    return sum(1 for due in dues if due < now)


@dataclass
class PollerObserver:
    """The poller's metrics. `provider` (the registry's name) labels them; `grace` is the
    overdue grace in seconds; `clock` wall-clock epoch seconds."""

    provider: str = "openai"
    grace: float = OVERDUE_GRACE_SECONDS
    clock: Callable[[], float] = time.time
    limit: int = MAX_WATCHED
    _dues: OrderedDict[JobKey, float] = field(default_factory=OrderedDict)

    def following(self, key: JobKey, running_for: float, expected: float) -> None:
        """Job `key` is followed here: its upstream job has run `running_for` seconds and is
        expected done `expected` seconds after its start."""
        due = self.clock() - running_for + expected + self.grace
        self._dues[key] = due
        self._dues.move_to_end(key)
        while len(self._dues) > self.limit:
            self._dues.popitem(last=False)

    def moved_on(self, key: JobKey) -> None:
        """Job `key` is past following here (generated, failed, cancelled, gone)."""
        self._dues.pop(key, None)

    def counts(self) -> tuple[int, int]:
        """(waiting, overdue) now."""
        return len(self._dues), overdue_count(list(self._dues.values()), self.clock())

    def report(self) -> None:
        waiting, late = self.counts()
        labels = {"provider": self.provider}
        metrics.JOBS_WAITING.set(waiting, labels)
        metrics.JOBS_OVERDUE.set(late, labels)

    @asynccontextmanager
    async def reporting(self, every: float = REPORT_SECONDS) -> AsyncIterator[None]:
        """Set the gauges now and every `every` seconds while the block runs."""
        self.report()

        async def report() -> None:
            self.report()

        async with periodically(every, report):
            yield

    def poll(self, outcome: str) -> None:
        """One look by a poll: pending, throttled, ended, elsewhere or error."""
        metrics.POLLS.add(1, {"provider": self.provider, "outcome": outcome})

    def webhook(self, outcome: str) -> None:
        """One webhook received: its outcome (looked, not_followed, unknown_job, duplicate,
        throttled, retry, bad_signature, stale, bad_request, too_large, disabled, ...)."""
        metrics.WEBHOOKS.add(1, {"provider": self.provider, "outcome": outcome})

    def rate_limited(self, model: str, seconds: float) -> None:
        """A look answered 429: the job waits `seconds` before the next."""
        labels = {"provider": self.provider, "model": model, "cause": "upstream_429"}
        metrics.RATE_LIMIT_WAITS.add(1, labels)
        metrics.RATE_LIMIT_WAIT.record(seconds, labels)

    def generation(self, model: str, size: str, outcome: str, seconds: float) -> None:
        """A job ended upstream after `seconds` (created to completed/failed)."""
        labels = {"provider": self.provider, "model": model, "size": size, "outcome": outcome}
        metrics.GENERATION_DURATION.record(max(0.0, seconds), labels)

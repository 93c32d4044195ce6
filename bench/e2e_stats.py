"""The end-to-end benchmark's arithmetic: percentiles, nats-server /varz deltas, and which class
of traffic a NATS subject belongs to. Pure functions, unit-tested (tests/unit/test_bench_e2e.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

VARZ_COUNTERS = ("in_msgs", "out_msgs", "in_bytes", "out_bytes")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks (numpy's
    default): p0 is the least value, p100 the greatest."""
    if not values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Latency:
    """p50/p90/p99 and the greatest of a set of latencies (seconds)."""

    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        return cls(
            percentile(values, 50), percentile(values, 90), percentile(values, 99), max(values)
        )


@dataclass(frozen=True)
class Usage:
    """A process's CPU seconds (user, system) and context switches, or their growth."""

    user: float = 0.0
    system: float = 0.0
    switches: int = 0

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.user - other.user, self.system - other.system, self.switches - other.switches
        )


def completion_rate(completed_at: Sequence[float]) -> float:
    """Jobs per second at which a set of jobs completed: the jobs after the first over the time
    from the first completion to the last (a steady offered rate gives that rate back; more
    than the system can do gives its capacity). 0 for fewer than two jobs or no time."""
    if len(completed_at) < 2:
        return 0.0
    span = max(completed_at) - min(completed_at)
    return (len(completed_at) - 1) / span if span > 0 else 0.0


def varz_delta(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, int]:
    """The growth of /varz's message and byte counters between two readings. A counter that went
    down means the server restarted between them: an error, not a negative figure."""
    delta = {}
    for name in VARZ_COUNTERS:
        start, end = before[name], after[name]
        if not isinstance(start, int) or not isinstance(end, int):
            raise TypeError(f"/varz {name} is not an integer: {start!r}, {end!r}")
        if end < start:
            raise ValueError(f"/varz {name} went down ({start} -> {end}): the server restarted")
        delta[name] = end - start
    return delta


def per_job(counts: Mapping[str, int], jobs: int) -> dict[str, float]:
    if jobs <= 0:
        raise ValueError("per job of no jobs")
    return {name: count / jobs for name, count in counts.items()}


KV_PREFIX = "$KV."
STREAM_MSG_GET = "$JS.API.STREAM.MSG.GET."
DIRECT_GET = "$JS.API.DIRECT.GET."
KV_STREAM_PREFIX = "KV_"


def classify(subject: str, reply: str = "") -> str:
    """The class of one message seen by a `>` subscription in clipline's account.

    A JetStream delivery to a consumer keeps its original subject and carries a `$JS.ACK.`
    reply, so it is told apart by its reply first. KV reads and writes are split per bucket
    (`$KV.<bucket>.<key>`, the `KV_<bucket>` stream of a GET); replies per inbox (each service
    has its own `_INBOX_<service>`)."""
    if reply.startswith("$JS.ACK."):
        return "delivery (to a consumer)"
    if subject.startswith("clipline.job.requested."):
        return "request"
    if subject.startswith("clipline."):
        return "event" if subject.startswith("clipline.job.") else "other clipline"
    if subject.startswith(KV_PREFIX):
        return f"KV write {subject.split('.')[1]}"
    if subject.startswith(DIRECT_GET):
        return f"$JS.API.DIRECT.GET {_bucket(subject[len(DIRECT_GET) :])}"
    if subject.startswith(STREAM_MSG_GET):
        return f"$JS.API.STREAM.MSG.GET {_bucket(subject[len(STREAM_MSG_GET) :])}"
    if subject.startswith("$JS.ACK."):
        return "$JS.ACK"
    if subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
        return "pull $JS.API.CONSUMER.MSG.NEXT"
    if subject.startswith("$JS.EVENT.ADVISORY.API"):
        return "$JS.EVENT.ADVISORY.API"
    if subject.startswith("$JS.EVENT.ADVISORY."):
        return "$JS.EVENT.ADVISORY (other)"
    if subject.startswith("$JS.API."):
        return f"$JS.API {subject.split('.')[2]}"  # STREAM, CONSUMER, INFO, ...
    if subject.startswith("_INBOX"):
        return f"reply to {subject.split('.', maxsplit=1)[0]}"
    return "other"


def _bucket(stream_and_rest: str) -> str:
    stream = stream_and_rest.split(".", maxsplit=1)[0]
    return stream[len(KV_STREAM_PREFIX) :] if stream.startswith(KV_STREAM_PREFIX) else stream


def breakdown(counts: Counter[str], jobs: int) -> list[tuple[str, float]]:
    """Messages per job by class, most first."""
    return [(name, count / jobs) for name, count in counts.most_common()]


def summed(rows: Iterable[tuple[str, float]]) -> float:
    return sum(value for _, value in rows)

"""Fault injection: what the simulator is told to get wrong, and the seeded dice that decide when.

`Faults` is both the start-up setting (CLIPLINE_SIM_FAULTS, JSON) and the body of
`PUT /control/faults`. `FaultPlan` turns it into decisions. Every random choice comes from a
stream seeded with `seed` and its purpose, so with the same seed the n-th create (or the n-th
request of one operation, or the n-th download) meets the same fate in every run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operation = Literal[
    "create",
    "retrieve",
    "list",
    "delete",
    "content",
    "remix",
    "edit",
    "extend",
    "character_create",
    "character_get",
]
MAX_SECONDS = 7 * 24 * 3600.0  # no duration or latency beyond a week: keeps timestamps finite


class Generation(BaseModel):
    """How long a job waits in the queue and then generates.

    fixed: `seconds`; uniform: `seconds` ± `spread`; lognormal: median `seconds`, sigma `spread`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # None: CLIPLINE_SIM_QUEUE_SECONDS / CLIPLINE_SIM_GENERATION_SECONDS
    queue_seconds: float | None = Field(default=None, ge=0, le=MAX_SECONDS)
    distribution: Literal["fixed", "uniform", "lognormal"] = "fixed"
    seconds: float | None = Field(default=None, ge=0, le=MAX_SECONDS)
    spread: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


class Faults(BaseModel):
    """Every knob defaults to "behave"; rates are probabilities per request (or per job)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    seed: int | None = None
    # Which operations the request-level faults (5xx, 429, latency) hit; None means all.
    operations: tuple[Operation, ...] | None = None
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: tuple[int, ...] = (500,)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    rate_limit_retry_after_ms: int = Field(default=1000, ge=1, le=86_400_000)
    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    latency_jitter_ms: float = Field(default=0.0, ge=0, le=600_000)
    # The ambiguous create: the job is created and accounted, then the connection drops before
    # the client has read the response.
    drop_after_create_rate: float = Field(default=0.0, ge=0, le=1)
    # Jobs that end `failed` (code `internal_error`) for no reason the client can see.
    job_failure_rate: float = Field(default=0.0, ge=0, le=1)
    generation: Generation = Field(default_factory=Generation)
    download_bytes_per_second: int | None = Field(default=None, ge=1, le=10**12)
    truncate_download_rate: float = Field(default=0.0, ge=0, le=1)
    truncate_fraction: float = Field(default=0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _statuses_are_server_errors(self) -> Faults:
        for status in self.error_statuses:
            if not 500 <= status <= 599:
                raise ValueError(f"error_statuses must be 5xx, got {status}")
        if not self.error_statuses:
            raise ValueError("error_statuses must not be empty")
        return self


@dataclass(frozen=True, slots=True)
class RequestFault:
    """What to do to one request before it is served."""

    delay_seconds: float = 0.0
    error_status: int | None = None
    rate_limited: bool = False


@dataclass(frozen=True, slots=True)
class JobFate:
    """Decided once per accepted create."""

    queue_seconds: float
    generation_seconds: float
    fails: bool  # ends `failed` with `internal_error`
    dropped: bool  # the connection is cut after the create is accepted


@dataclass(frozen=True, slots=True)
class DownloadFault:
    bytes_per_second: int | None = None
    truncate_at: int | None = None  # stop after this many bytes, with the full Content-Length


class FaultPlan:
    """Decisions drawn from the configured faults; replace wholesale to change them.

    Each purpose draws from its own seeded stream (one per operation for request faults, one
    per accepted create for a job's fate, one for downloads), so the number of polls a client
    happens to make never shifts which creates fail or drop.
    """

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._streams: dict[str, random.Random] = {}

    def _stream(self, purpose: str) -> random.Random:
        stream = self._streams.get(purpose)
        if stream is None:
            seed = None if self.faults.seed is None else f"{self.faults.seed}:{purpose}"
            stream = self._streams[purpose] = random.Random(seed)  # noqa: S311 - not crypto
        return stream

    def on_request(self, operation: Operation) -> RequestFault:
        f = self.faults
        if f.operations is not None and operation not in f.operations:
            return RequestFault()
        if not (f.latency_ms or f.latency_jitter_ms or f.error_rate or f.rate_limit_rate):
            return RequestFault()
        dice = self._stream(f"request:{operation}")
        delay = (f.latency_ms + dice.uniform(0, f.latency_jitter_ms)) / 1000
        if f.error_rate and dice.random() < f.error_rate:
            return RequestFault(delay, error_status=dice.choice(f.error_statuses))
        if f.rate_limit_rate and dice.random() < f.rate_limit_rate:
            return RequestFault(delay, rate_limited=True)
        return RequestFault(delay)

    def for_job(self, ordinal: int, queue_default: float, generation_default: float) -> JobFate:
        """The fate of the `ordinal`-th accepted create (0-based): same seed, same fates."""
        f = self.faults
        g = f.generation
        # Unseeded: one shared stream (reseeding from urandom for every job is costly).
        dice = (
            self._stream("job") if f.seed is None else random.Random(f"{f.seed}:job:{ordinal}")  # noqa: S311 - reproducible dice
        )
        queue = queue_default if g.queue_seconds is None else g.queue_seconds
        seconds = generation_default if g.seconds is None else g.seconds
        if g.distribution == "uniform" and g.spread:
            seconds = dice.uniform(seconds - g.spread, seconds + g.spread)
        elif g.distribution == "lognormal" and g.spread and seconds > 0:
            exponent = dice.gauss(math.log(seconds), g.spread)
            seconds = math.exp(min(exponent, math.log(MAX_SECONDS)))
        return JobFate(
            queue_seconds=queue,
            generation_seconds=min(MAX_SECONDS, max(0.0, seconds)),
            fails=bool(f.job_failure_rate) and dice.random() < f.job_failure_rate,
            dropped=bool(f.drop_after_create_rate) and dice.random() < f.drop_after_create_rate,
        )

    def on_download(self, size: int) -> DownloadFault:
        f = self.faults
        truncate_at = None
        if (
            f.truncate_download_rate
            and self._stream("download").random() < f.truncate_download_rate
        ):
            truncate_at = int(size * f.truncate_fraction)
        return DownloadFault(f.download_bytes_per_second, truncate_at)

"""Fault injection: what the simulator is told to get wrong, and the seeded dice that decide when.

`Faults` is both the start-up setting (CLIPLINE_SIM_FAULTS, JSON) and the body of
`PUT /control/faults`. `FaultPlan` turns it into decisions; every random choice comes from one
`random.Random(seed)`, so a run with the same seed and the same request order misbehaves the
same way.
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
OPERATIONS: tuple[Operation, ...] = (
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
)
Rate = float


class Generation(BaseModel):
    """How long a job waits in the queue and then generates.

    fixed: `seconds`; uniform: `seconds` ± `spread`; lognormal: median `seconds`, sigma `spread`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_seconds: float | None = Field(default=None, ge=0)  # None: CLIPLINE_SIM_QUEUE_SECONDS
    distribution: Literal["fixed", "uniform", "lognormal"] = "fixed"
    seconds: float | None = Field(default=None, ge=0)  # None: CLIPLINE_SIM_GENERATION_SECONDS
    spread: float = Field(default=0.0, ge=0)


class Faults(BaseModel):
    """Every knob defaults to "behave"; rates are probabilities per request (or per job)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = None
    # Which operations the request-level faults (5xx, 429, latency) hit; None means all.
    operations: tuple[Operation, ...] | None = None
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: tuple[int, ...] = (500,)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    rate_limit_retry_after_ms: int = Field(default=1000, ge=1)
    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    # The ambiguous create: the job is created and accounted, then the connection drops before
    # the client has read the response.
    drop_after_create_rate: float = Field(default=0.0, ge=0, le=1)
    # Jobs that end `failed` (code `internal_error`) for no reason the client can see.
    job_failure_rate: float = Field(default=0.0, ge=0, le=1)
    generation: Generation = Field(default_factory=Generation)
    download_bytes_per_second: int | None = Field(default=None, ge=1)
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
class DownloadFault:
    bytes_per_second: int | None = None
    truncate_at: int | None = None  # stop after this many bytes, with the full Content-Length


class FaultPlan:
    """Decisions drawn from the configured faults; replace wholesale to change them."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)  # noqa: S311 - reproducible dice, not crypto

    def on_request(self, operation: Operation) -> RequestFault:
        f = self.faults
        if f.operations is not None and operation not in f.operations:
            return RequestFault()
        delay = 0.0
        if f.latency_ms or f.latency_jitter_ms:
            delay = (f.latency_ms + self._random.uniform(0, f.latency_jitter_ms)) / 1000
        if f.error_rate and self._random.random() < f.error_rate:
            return RequestFault(delay, error_status=self._random.choice(f.error_statuses))
        if f.rate_limit_rate and self._random.random() < f.rate_limit_rate:
            return RequestFault(delay, rate_limited=True)
        return RequestFault(delay)

    def drop_after_create(self) -> bool:
        rate = self.faults.drop_after_create_rate
        return bool(rate) and self._random.random() < rate

    def job_fails(self) -> bool:
        rate = self.faults.job_failure_rate
        return bool(rate) and self._random.random() < rate

    def durations(self, queue_default: float, generation_default: float) -> tuple[float, float]:
        """(queue, generation) seconds for a new job."""
        g = self.faults.generation
        queue = queue_default if g.queue_seconds is None else g.queue_seconds
        seconds = generation_default if g.seconds is None else g.seconds
        if g.distribution == "uniform" and g.spread:
            seconds = self._random.uniform(seconds - g.spread, seconds + g.spread)
        elif g.distribution == "lognormal" and g.spread and seconds > 0:
            seconds = math.exp(self._random.gauss(math.log(seconds), g.spread))
        return queue, max(0.0, seconds)

    def on_download(self, size: int) -> DownloadFault:
        f = self.faults
        truncate_at = None
        if f.truncate_download_rate and self._random.random() < f.truncate_download_rate:
            truncate_at = int(size * f.truncate_fraction)
        return DownloadFault(f.download_bytes_per_second, truncate_at)

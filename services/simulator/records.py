"""The rows of the simulator's tables: jobs, create and attempt accounting, characters."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.simulator import domain
from services.simulator.domain import Timeline


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    model: str
    base_model: str
    prompt: str
    size: str
    seconds: str  # for extensions, the stitched total
    created_at: int
    # Clock.time() at creation: what a restart rebuilds `started` from, since a monotonic clock
    # means nothing in another process.
    created_wall: float
    started: float  # Clock.monotonic() at creation; the timeline runs from here
    timeline: Timeline
    completed_at: int
    remixed_from: str | None = None
    extensions: int = 0
    first_frame: bytes | None = field(default=None, repr=False)  # the input_reference image

    @property
    def width(self) -> int:
        return domain.dimensions(self.size)[0]

    @property
    def height(self) -> int:
        return domain.dimensions(self.size)[1]


@dataclass(frozen=True, slots=True)
class CreateRecord:
    """One accepted create, with the client's dedup headers: proof of exactly-once upstream."""

    video_id: str
    kind: str
    client_request_id: str | None
    idempotency_key: str | None
    content_type: str
    model: str
    size: str
    seconds: str
    created_at: int
    source_video_id: str | None
    dropped: bool


@dataclass(frozen=True, slots=True)
class Attempt:
    """Every create-like request that reached the API, refused or not (401, 429, 5xx, 400)."""

    operation: str
    status: int
    client_request_id: str | None
    idempotency_key: str | None
    at: int


@dataclass(frozen=True, slots=True)
class Character:
    id: str
    name: str
    created_at: int

"""The SSE body of a job's events on fake ports: what it shows, where it ends, and that a
stream that cannot be read ends with a comment instead of an error mid-response."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.intake.adapters import probe_image
from services.intake.follow import event_stream
from services.intake.ports import Deps, StoredEvent
from services.intake.sse import ENDED, HEARTBEAT, UNAVAILABLE
from shared.contracts import Event, JobStatus
from shared.registry import load_registry
from tests.component.harness import TENANT, job_record, new_job_id
from tests.fakes import InMemoryApiKeys, InMemoryInputStore, InMemoryJobStore


async def _emit(event: Event) -> None:
    raise AssertionError(f"nothing is emitted here: {event}")


class Scripted:
    """JobEvents that answers a script (None: an idle period), then fails if `broken`."""

    def __init__(self, script: list[StoredEvent | None], *, broken: bool = False) -> None:
        self.script = script
        self.broken = broken
        self.asked: list[int] = []

    async def follow(
        self, tenant: str, job_id: str, after: int, idle_seconds: float
    ) -> AsyncIterator[StoredEvent | None]:
        self.asked.append(after)
        for item in self.script:
            yield item
        if self.broken:
            raise ConnectionError("nats is gone")


JOB = new_job_id()


def stored(seq: int, kind: str) -> StoredEvent:
    return StoredEvent(seq, f"clipline.job.{kind}.v1.{TENANT}.{JOB}", "{}")


async def body(status: JobStatus, events: Scripted, after: int = 0) -> list[bytes]:
    job_id = JOB
    jobs = InMemoryJobStore([job_record(job_id, status)])
    deps = Deps(jobs, InMemoryInputStore(), _emit, load_registry().provider("simulator"),
                probe_image, InMemoryApiKeys((TENANT,)), events=events)  # fmt: skip
    stream = event_stream(deps, events, TENANT, job_id, after=after, idle_seconds=1)
    return [chunk async for chunk in stream]


async def test_it_ends_after_the_terminal_event_and_hides_budget_alerts() -> None:
    events = Scripted([
        stored(3, "accepted"), stored(4, "budget_alert"), None,
        stored(9, "cancelled"), stored(10, "accepted"),
    ])  # fmt: skip

    chunks = await body(JobStatus.CANCELLING, events, after=2)

    assert chunks == [
        b"id: 3\nevent: accepted\ndata: {}\n\n", HEARTBEAT,
        b"id: 9\nevent: cancelled\ndata: {}\n\n", ENDED,
    ]  # fmt: skip
    assert events.asked == [2]


async def test_when_idle_an_ended_record_ends_the_stream() -> None:
    chunks = await body(JobStatus.COMPLETED, Scripted([None, None, None]))

    assert chunks == [HEARTBEAT, ENDED]  # after a grace period: its event may be on its way


async def test_a_stream_that_cannot_be_read_ends_with_a_comment() -> None:
    chunks = await body(JobStatus.GENERATING, Scripted([None], broken=True))

    assert chunks == [HEARTBEAT, UNAVAILABLE]

"""Shared bits of the component tests: delivery outcomes without heartbeats, failing fakes,
the submitter on fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pydantic import ValidationError

from services.submitter.app import build_router as build_submitter
from services.submitter.ports import Deps as SubmitterDeps
from shared.contracts import JobRecordV1, JobSpec
from shared.jobstore import Change
from tests.component.harness import Fakes, Harness, Outcome, running
from tests.fakes import FakeProvider, InMemoryJobStore


def actions(outcomes: list[Outcome]) -> list[str]:
    """ack / nak / term per delivery, in order (`in_progress` heartbeats are timing, left out)."""
    return [o.action for o in outcomes if o.action != "in_progress"]


def settled(outcomes: list[Outcome]) -> list[tuple[str, float | None]]:
    """(action, nak delay) per delivery, in order, without heartbeats."""
    return [(o.action, o.delay) for o in outcomes if o.action != "in_progress"]


def validation_error() -> ValidationError:
    """A real pydantic ValidationError, as any model inside a handler (or port) may raise."""
    try:
        JobSpec.model_validate({"model": 1})
    except ValidationError as exc:
        return exc
    raise AssertionError("JobSpec accepted a bad spec")


class FlakyJobStore(InMemoryJobStore):
    """InMemoryJobStore whose next `failures` updates raise `error` (then it works again)."""

    def __init__(self, error: Exception, failures: int = 1) -> None:
        super().__init__()
        self.error = error
        self.failures = failures

    async def update(
        self, tenant: str, job_id: str, change: Change, *, fresh: bool = False
    ) -> JobRecordV1 | None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await super().update(tenant, job_id, change, fresh=fresh)


@dataclass
class Submitter:
    """The submitter's router on fakes, and the scripted provider it creates with."""

    h: Harness
    provider: FakeProvider


@asynccontextmanager
async def running_submitter(max_attempts: int) -> AsyncIterator[Submitter]:
    provider = FakeProvider()

    def deps(f: Fakes) -> SubmitterDeps:
        return SubmitterDeps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0)

    async with running(build_submitter(max_attempts), deps) as h:
        yield Submitter(h, provider)

"""Shared bits of the component tests: delivery outcomes without heartbeats, failing fakes."""

from __future__ import annotations

from pydantic import ValidationError

from shared.contracts import JobRecordV1, JobSpec
from shared.jobstore import Change
from tests.component.harness import Outcome
from tests.fakes import InMemoryJobStore


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

    async def update(self, tenant: str, job_id: str, change: Change) -> JobRecordV1 | None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return await super().update(tenant, job_id, change)

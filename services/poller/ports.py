"""What the poller's handlers touch: the job store, its emitter, the provider, its policy; and
what its webhook endpoint adds: the upstream-id index and the ids of webhooks already taken."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from standardwebhooks import Webhook

from services.poller.domain import PollPolicy
from shared.contracts import JobSpec
from shared.jobstore import JobStore, UpstreamIndex
from shared.outcomes import Emit
from shared.provider import VideoProvider


class Expectations(Protocol):
    """How long jobs take upstream, learned from the finished ones (per model, size, seconds)."""

    async def expected(self, spec: JobSpec) -> float:
        """Seconds after submission a job like `spec` is expected to be done."""
        ...

    async def finished(self, spec: JobSpec, took: float) -> None:
        """Learn from one finished job of the kind: the upstream took `took` seconds."""
        ...


class AtOnce:
    """Expects every job done at once: each followed job is looked at as soon as it is
    submitted (tests of the following itself, not of its schedule)."""

    async def expected(self, spec: JobSpec) -> float:
        return 0.0

    async def finished(self, spec: JobSpec, took: float) -> None:
        return None


AT_ONCE = AtOnce()


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: VideoProvider
    policy: PollPolicy
    expectations: Expectations = AT_ONCE


class SeenWebhooks(Protocol):
    """Webhook ids taken, each by one receiver only (a replay is refused)."""

    async def claim(self, webhook_id: str) -> bool:
        """Record `webhook_id` as taken; False when it already was (by any replica)."""
        ...

    async def release(self, webhook_id: str) -> None:
        """Forget a claim whose processing failed, so the upstream's retry is taken."""
        ...


@dataclass(frozen=True, slots=True)
class WebhookDeps:
    follow: Deps
    upstream: UpstreamIndex
    seen: SeenWebhooks
    verifier: Webhook
    """Checks Standard Webhooks signatures with CLIPLINE_WEBHOOK_SECRET."""

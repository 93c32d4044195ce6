"""What the poller's handlers touch: the job store, its emitter, the provider, its policy; and
what its webhook endpoint adds: the upstream-id index and the ids of webhooks already taken."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from standardwebhooks import Webhook

from services.poller.domain import PollPolicy
from services.poller.observe import PollerObserver
from shared.contracts import JobSpec
from shared.jobstore import JobStore, UpstreamIndex
from shared.outcomes import Emit
from shared.provider import VideoProvider

if TYPE_CHECKING:
    from services.poller.held import HeldTimers


class Expectations(Protocol):
    """How long jobs take upstream, learned from the finished ones (per model, size, seconds)."""

    async def expected(self, spec: JobSpec) -> float:
        """Seconds after submission a job like `spec` is expected to be done."""
        ...

    async def finished(self, spec: JobSpec, video_id: str, took: float) -> None:
        """Learn from one finished job of the kind: the upstream took `took` seconds to make
        `video_id` (each video counts once)."""
        ...


class EarlyWebhooks(Protocol):
    """Webhooks that named a video before its job was followed (the create's answer was lost
    and the job adopted later, or it came between the link and `submitted`): the job's first
    poll looks at once instead of waiting for its expected completion."""

    async def tell(self, video_id: str) -> None:
        """Remember that a verified webhook named `video_id` while no followed job had it."""
        ...

    async def told(self, video_id: str) -> bool:
        """Whether a webhook named `video_id` early (remembered for the replay window)."""
        ...


class NeverTold:
    """EarlyWebhooks with webhooks off: nothing is ever told."""

    async def tell(self, video_id: str) -> None:
        return None

    async def told(self, video_id: str) -> bool:
        return False


NEVER_TOLD = NeverTold()


class AtOnce:
    """Expects every job done at once: each followed job is looked at as soon as it is
    submitted (tests of the following itself, not of its schedule)."""

    async def expected(self, spec: JobSpec) -> float:
        return 0.0

    async def finished(self, spec: JobSpec, video_id: str, took: float) -> None:
        return None


AT_ONCE = AtOnce()


class TimerAcks(Protocol):
    """Acks a delivery still held in a delayed nak (its ack subject), before it comes due:
    JetStream then forgets the message and redelivers nothing."""

    async def ack(self, reply: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    emit: Emit
    provider: VideoProvider
    policy: PollPolicy
    expectations: Expectations = AT_ONCE
    early: EarlyWebhooks = NEVER_TOLD
    held: HeldTimers | None = None
    """Webhooks on: the `submitted` deliveries this process holds in delayed naks (held.py),
    acked when a webhook moves their job on. None: nothing held (webhooks off)."""
    observer: PollerObserver = field(default_factory=PollerObserver)
    """The poller's metrics: jobs followed and overdue, looks, webhooks (observe.py)."""


class SeenWebhooks(Protocol):
    """Webhook ids taken, each by one receiver only (a replay is refused)."""

    async def claim(self, webhook_id: str) -> bool:
        """Record `webhook_id` as taken; False when it already was (by any replica), unless its
        taker never finished it (died mid-way): such a claim, once stale, is taken over."""
        ...

    async def renew(self, webhook_id: str) -> None:
        """The claim's taker is alive and still at it (not to be taken over)."""
        ...

    async def done(self, webhook_id: str) -> None:
        """The webhook was handled: its id is refused from now on, whatever happens."""
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

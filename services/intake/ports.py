"""What intake's use cases touch: job store, input images, emitter, provider, image prober,
API keys, and storage's assets request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from services.intake.callbacks_send import Sender
from services.intake.domain import ImageFacts
from shared.apikeys import ApiKeys
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1
from shared.inputs import InputStore
from shared.jobstore import JobStore
from shared.outcomes import Emit
from shared.registry import ProviderSpec

ImageProbe = Callable[[bytes], ImageFacts | None]
"""Reads what image bytes really are (blocking: run in a thread)."""


class Assets(Protocol):
    """Storage's assets request: presigned URLs of a job's stored variants, or their deletion.
    Never raises: storage unreachable (or no storage running) is an `unavailable` reply."""

    async def ask(self, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1: ...


class NoAssets:
    """No storage to ask (tests of the rest of intake): every request is `unavailable`."""

    async def ask(self, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1:
        return AssetsReplyV1(job_id=request.job_id, error="unavailable", detail="no storage")


@dataclass(frozen=True, slots=True)
class Deps:
    jobs: JobStore
    inputs: InputStore
    emit: Emit
    provider: ProviderSpec
    probe: ImageProbe
    keys: ApiKeys
    assets: Assets = field(default_factory=NoAssets)
    callbacks: Sender | None = None
    """Caller webhooks (services/intake/callbacks_send.py); None: a request naming a
    callback_url is refused."""

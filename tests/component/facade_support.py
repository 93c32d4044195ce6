"""Intake's HTTP API on in-memory ports, with storage's assets answer wired in process (the
NATS request/reply replaced by a call): what the facade and the assets endpoint need."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from services.intake.adapters import probe_image
from services.intake.http import build_http
from services.intake.ports import Deps, JobEvents
from services.storage import assets as storage_assets
from services.storage import ports as storage_ports
from services.storage.handlers import facts_of, key_of
from shared.contracts import AssetRef, Event, JobRecordV1, JobStatus
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1, assets_subject
from shared.provider.wire import VARIANTS
from shared.registry import load_registry
from tests.component.harness import job_record
from tests.fakes import (
    FakeProvider,
    InMemoryApiKeys,
    InMemoryAssetStore,
    InMemoryInputStore,
    InMemoryJobStore,
    StoredObject,
    bearer,
)

CONTENT = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}
TENANTS = ("acme", "globex")


async def _nothing(event: Event) -> None:
    return None


class LoopbackAssets:
    """intake's Assets port answered by storage's own `answer` on the same fakes."""

    def __init__(self, jobs: InMemoryJobStore, store: InMemoryAssetStore) -> None:
        self.deps = storage_ports.Deps(jobs, _nothing, FakeProvider(), store)
        self.asked: list[tuple[str, AssetsRequestV1]] = []
        self.down = False

    async def ask(self, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1:
        self.asked.append((tenant, request))
        if self.down:
            return AssetsReplyV1(job_id=request.job_id, error="unavailable", detail="down")
        data = request.model_dump_json().encode()
        return await storage_assets.answer(self.deps, assets_subject(tenant), data)


@dataclass
class Served:
    client: httpx.AsyncClient
    jobs: InMemoryJobStore
    store: InMemoryAssetStore
    assets: LoopbackAssets
    events: list[Event]
    app: Any
    """The ASGI app (to serve it on a socket too)."""

    def completed(self, job_id: str, tenant: str = "acme", **changes: Any) -> JobRecordV1:
        """Seed a completed job of `tenant` with its three variants stored."""
        record = job_record(job_id, JobStatus.COMPLETED, upstream_id="video_up", **changes)
        record = record.model_copy(update={"tenant": tenant})
        facts = facts_of(record)
        refs = []
        for variant in VARIANTS:
            key = key_of(facts, variant)
            data = f"{variant} of {job_id}".encode()
            self.store.objects[key] = StoredObject(data, CONTENT[variant])
            refs.append(
                AssetRef(
                    variant=variant,
                    bucket=self.store.bucket,
                    key=key,
                    size_bytes=len(data),
                    sha256="0" * 64,
                    content_type=CONTENT[variant],
                )
            )
        record = record.model_copy(update={"assets": refs})
        self.jobs.put(record)
        return record


@asynccontextmanager
async def serving(
    transport: httpx.AsyncBaseTransport | None = None, job_events: JobEvents | None = None
) -> AsyncIterator[Served]:
    jobs, store = InMemoryJobStore(), InMemoryAssetStore("clipline-assets")
    assets = LoopbackAssets(jobs, store)
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        emitted.append(event)

    deps = Deps(
        jobs, InMemoryInputStore(), emit, load_registry().provider("simulator"), probe_image,
        InMemoryApiKeys(TENANTS), assets=assets, events=job_events,
    )  # fmt: skip
    app = build_http(deps)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://intake", headers=bearer("acme")
    ) as client:
        yield Served(client, jobs, store, assets, emitted, app)

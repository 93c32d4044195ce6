"""storage handlers: stream every variant of a generated job, as its record names them, into
S3, then emit the completion event. Registered on the router in app.py."""

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from faststream.exceptions import NackMessage

from services.storage.domain import (
    CONTENT_TYPES,
    AssetsExpired,
    JobFacts,
    WaitForStore,
    expires,
    length_problem,
    object_key,
    object_metadata,
    outage,
    still_stored,
    timings,
)
from services.storage.gate import PriorityGate
from services.storage.ports import AssetStore, Deps, StoreUnavailable
from shared.contracts import (
    AssetRef,
    JobCompletedV1,
    JobGeneratedV1,
    JobRecordV1,
    JobTimings,
)
from shared.contracts.lifecycle import (
    IllegalTransition,
    JobStatus,
    begin_store,
    complete,
    keep_assets,
)
from shared.contracts.stage import Cancelling, Disagrees, Ended, Live, Unknown, screen_then
from shared.jobstore import JobStore, advance, apply
from shared.messaging import Context
from shared.outcomes import Emit, announce_end, cancel_job, end_job, ignored
from shared.provider import ProviderNotFound, ProviderRejected, VideoProvider
from shared.provider.wire import VARIANTS, Variant

SERVICE = "storage"
log = logging.getLogger("clipline.storage")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STORED_FROM = frozenset({JobStatus.GENERATED, JobStatus.STORING})


# Real annotations here (no `from __future__ import annotations`): FastStream resolves string
# annotations by name, also in its callers' frames, where a local of the same name wins.
# One injection style in every service: the handler takes the service's Deps bundle.
StorageDeps = Annotated[Deps, Context("deps")]


async def on_job_generated(event: JobGeneratedV1, deps: StorageDeps) -> None:
    """Store what the record says was generated: its upstream id, cost and expiry, never the
    event's copies (an event that disagrees with the record changes nothing)."""
    jobs, emit, provider, store = deps.jobs, deps.emit, deps.provider, deps.store
    gate, delete_upstream = deps.gate, deps.delete_upstream
    now = datetime.now(UTC)
    verdict = await apply(jobs, event, lambda r: screen_then(r, event, lambda j: start(j, now)))
    match verdict:
        case Unknown() | Disagrees() as why:
            ignored(SERVICE, event, why)
        case Ended(record=ended) if ended.status == JobStatus.COMPLETED:
            await emit(await completed(ended, store))  # redelivered: store nothing
            if delete_upstream:  # a crash may have come before the delete: again (404 is fine)
                await delete_upstream_copy(provider, ended)
        case Ended(record=ended):
            if ended.status == JobStatus.CANCELLED and JobStatus.STORING.value in ended.history:
                # Cancelled while storing (by this stage or another): a store cut short by a
                # crash, or a delete that failed, may have left objects. Keep nothing.
                await forget(store, facts_of(ended))
            await announce_end(emit, ended, SERVICE)  # its event may have been lost
        case Cancelling(record=asked):
            await cancel_job(jobs, emit, asked, stage=SERVICE)  # asked to cancel: not stored
            if JobStatus.STORING.value in asked.history:
                await forget(store, facts_of(asked))  # a crash may have left some
        case Live(record=live) if live.status != JobStatus.STORING:
            ignored(SERVICE, event, Disagrees((f"status ({live.status.value})",)))
        case Live(record=live):
            await store_job(
                jobs,
                emit,
                provider,
                store,
                gate=gate,
                job=live,
                delete_upstream=delete_upstream,
            )


async def store_job(
    jobs: JobStore,
    emit: Emit,
    provider: VideoProvider,
    store: AssetStore,
    *,
    gate: PriorityGate,
    job: JobRecordV1,
    delete_upstream: bool,
) -> None:
    """Store a job now `storing`, then complete it (or end it as its upstream or S3 says)."""
    facts = facts_of(job)
    try:
        assets = await store_in_turn(gate, jobs, emit, provider, store, job=job, facts=facts)
    except (ProviderNotFound, ProviderRejected) as exc:
        await end_job(
            jobs, emit, job, reason="assets_unavailable", detail=exc.message,
            stage=SERVICE, upstream_id=job.upstream_id,
        )  # fmt: skip
        return
    except StoreUnavailable as exc:
        await wait_for_store(jobs, emit, job, exc)
        return
    if assets is not None:  # else cancelled (or ended) while it waited for its turn
        await finish(jobs, emit, provider, store, job=job, facts=facts, assets=assets,
                     delete_upstream=delete_upstream)  # fmt: skip


def start(record: JobRecordV1, now: datetime) -> JobRecordV1:
    """The first step of storing: only a job the upstream finished (`generated`), or one a
    redelivery finds `storing`, is stored; any other state refuses it (a forged or early
    `generated`: nothing is written)."""
    if record.status not in STORED_FROM:
        raise IllegalTransition(f"storing: {record.job_id} is {record.status.value}")
    return begin_store(record, now)


def video_of(job: JobRecordV1) -> str:
    """The upstream id of a generated job (every record past `submitted` has one)."""
    if job.upstream_id is None:
        raise ValueError(f"{job.job_id} has no upstream id on record")
    return job.upstream_id


async def finish(
    jobs: JobStore,
    emit: Emit,
    provider: VideoProvider,
    store: AssetStore,
    *,
    job: JobRecordV1,
    facts: JobFacts,
    assets: list[AssetRef],
    delete_upstream: bool,
) -> None:
    """Record the job completed and announce it (then delete the upstream's copy if asked);
    a job asked to cancel while it was storing is cancelled instead, and keeps nothing."""
    done = await advance(jobs, job, complete, assets=assets)
    if done is not None:
        await emit(await completed(done, store))
        if delete_upstream:
            await delete_upstream_copy(provider, job)
    else:
        await cancel_storing(jobs, emit, store, job=job, facts=facts)


async def store_in_turn(
    gate: PriorityGate,
    jobs: JobStore,
    emit: Emit,
    provider: VideoProvider,
    store: AssetStore,
    *,
    job: JobRecordV1,
    facts: JobFacts,
) -> list[AssetRef] | None:
    """The job's store when its turn comes (the soonest upstream expiry first). None when it
    was asked to cancel, or ended, while it waited: then nothing is fetched (and a cancel is
    carried out here)."""
    deadline = expires(job.expires_at, job.history.get(JobStatus.GENERATED.value))
    async with gate.slot(deadline) as waited:
        if waited and not await still_storing(jobs, job):
            await cancel_storing(jobs, emit, store, job=job, facts=facts)
            return None
        return await store_assets(jobs, provider, store, job=job, facts=facts, kept=job.assets)


async def cancel_storing(
    jobs: JobStore, emit: Emit, store: AssetStore, *, job: JobRecordV1, facts: JobFacts
) -> None:
    """Carry out a cancel asked while the job was storing (or waiting to): it ends cancelled
    and keeps nothing in S3 (this or an earlier delivery may have stored some). A job that
    ended otherwise meanwhile is left as it is."""
    if await cancel_job(jobs, emit, job, stage=SERVICE):
        await forget(store, facts)


async def still_storing(jobs: JobStore, job: JobRecordV1) -> bool:
    record = await jobs.get(job.tenant, job.job_id)
    return record is not None and record.status == JobStatus.STORING


async def delete_upstream_copy(provider: VideoProvider, job: JobRecordV1) -> None:
    """Delete the upstream's copy of a stored job. Best effort: the job is already completed,
    so a failure is logged and never raised (a 404: deleted by an earlier delivery, or expired)."""
    try:
        await provider.delete(video_of(job))
    except ProviderNotFound:
        log.debug("storage: job %s: upstream %s already gone", job.job_id, job.upstream_id)
    except Exception as exc:  # any failure: the job is completed whatever happens here
        log.warning(
            "storage: job %s: could not delete upstream %s (kept there until it expires): %s",
            job.job_id, job.upstream_id, exc,
        )  # fmt: skip
    else:
        log.info("storage: job %s: deleted upstream %s", job.job_id, job.upstream_id)


async def wait_for_store(
    jobs: JobStore, emit: Emit, job: JobRecordV1, exc: StoreUnavailable
) -> None:
    """S3 is unreachable: the job waits (a delayed redelivery, no error budget spent) while the
    upstream's copy lasts, and fails `asset_expired` once it has expired."""
    now = datetime.now(UTC)
    match outage(
        now=now,
        storing_since=job.history.get(JobStatus.STORING.value, now),
        expires_at=job.expires_at,
        generated_at=job.history.get(JobStatus.GENERATED.value),
    ):
        case WaitForStore(delay=delay):
            log.warning("storage: job %s waits %.1fs for S3: %s", job.job_id, delay, exc)
            raise NackMessage(delay=delay)
        case AssetsExpired(detail=detail):
            await end_job(
                jobs, emit, job, reason="asset_expired", detail=detail,
                stage=SERVICE, upstream_id=job.upstream_id,
            )  # fmt: skip


def facts_of(record: JobRecordV1) -> JobFacts:
    """The job's facts for its keys and metadata, from its record alone (the same on every
    delivery: the day is the record's `accepted` time)."""
    spec = record.spec
    return JobFacts(
        job_id=record.job_id, tenant=record.tenant,
        accepted_at=record.history.get(JobStatus.ACCEPTED.value, EPOCH),
        model=spec.model, size=spec.size, seconds=spec.seconds, prompt=spec.prompt,
        cost_micros=record.cost_micros or 0,
    )  # fmt: skip


def key_of(facts: JobFacts, variant: Variant) -> str:
    return object_key(facts.tenant, facts.job_id, variant, facts.accepted_at)


class IncompleteDownload(Exception):
    """A variant's download ended short of (or past) the length the upstream declared: the
    object is not stored, and the variant is fetched again on a later delivery."""


async def store_assets(
    jobs: JobStore,
    provider: VideoProvider,
    store: AssetStore,
    *,
    job: JobRecordV1,
    facts: JobFacts,
    kept: list[AssetRef],
) -> list[AssetRef]:
    """Every variant, stored concurrently and each on its own: one an earlier delivery stored
    (recorded, and still that object in S3) is not fetched again. When any fails, the ones
    stored are recorded first, so the next delivery fetches only what is missing."""
    recorded = {a.variant: a for a in kept}
    results = await asyncio.gather(
        *(
            reuse_or_store(provider, store, job, facts, v, recorded=recorded.get(v))
            for v in VARIANTS
        ),
        return_exceptions=True,
    )
    assets = [r for r in results if isinstance(r, AssetRef)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if not errors:
        return assets
    if any(a not in kept for a in assets):

        def keep(record: JobRecordV1 | None) -> JobRecordV1 | None:
            ok = record is not None and record.status == JobStatus.STORING
            return keep_assets(record, assets) if ok and record else None

        await jobs.update(job.tenant, job.job_id, keep)
    raise first_error(errors)


def first_error(errors: list[BaseException]) -> BaseException:
    """The error that decides a job's next step: an upstream that refuses its assets for good,
    then S3 unreachable (a wait, no budget spent), then any other."""
    final = [e for e in errors if isinstance(e, ProviderNotFound | ProviderRejected)]
    down = [e for e in errors if isinstance(e, StoreUnavailable)]
    return (final or down or errors)[0]


async def reuse_or_store(
    provider: VideoProvider,
    store: AssetStore,
    job: JobRecordV1,
    facts: JobFacts,
    variant: Variant,
    *,
    recorded: AssetRef | None,
) -> AssetRef:
    if recorded is not None and recorded.key == key_of(facts, variant):
        stat = await store.stat(recorded.key)
        if stat is not None and still_stored(
            recorded.size_bytes, stat.size_bytes, stat.metadata, facts.job_id
        ):
            return recorded
    return await store_variant(provider, store, job, facts, variant)


async def store_variant(
    provider: VideoProvider,
    store: AssetStore,
    job: JobRecordV1,
    facts: JobFacts,
    variant: Variant,
) -> AssetRef:
    """Stream one variant from the upstream into S3, its length verified on the way."""
    key, content_type = key_of(facts, variant), CONTENT_TYPES[variant]
    async with provider.download(video_of(job), variant) as download:
        chunks = verified(download.chunks, download.content_length, variant)
        stored = await store.put_stream(
            key, chunks, content_type, object_metadata(facts), length=download.content_length
        )
    return AssetRef(variant=variant, content_type=content_type, **asdict(stored))


async def verified(
    chunks: AsyncIterator[bytes], declared: int | None, variant: Variant
) -> AsyncIterator[bytes]:
    """`chunks`, raising IncompleteDownload at their end (before the upload is finished, so
    nothing is stored) when their length is not the declared one."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        yield chunk
    if (problem := length_problem(received, declared)) is not None:
        raise IncompleteDownload(f"{variant}: {problem}")


async def forget(store: AssetStore, facts: JobFacts) -> None:
    """Delete every variant of a job (a cancelled job keeps nothing; absent keys are fine)."""
    for variant in VARIANTS:
        await store.delete(key_of(facts, variant))


async def completed(record: JobRecordV1, store: AssetStore) -> JobCompletedV1:
    """The completion event, built from the stored record (the same on every redelivery but
    for the URLs, presigned now: a credential, so only in the event, never on the record)."""
    history = record.history
    finished = history.get(JobStatus.COMPLETED.value, datetime.now(UTC))
    assets = [a.model_copy(update={"url": await store.presign(a.key)}) for a in record.assets]
    return JobCompletedV1.fact(
        record,
        upstream_id=record.upstream_id or "",
        assets=assets,
        cost_micros=record.cost_micros or 0,
        timings=JobTimings(**asdict(timings(history, finished))),
    )

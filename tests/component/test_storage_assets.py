"""storage's assets request (presign / delete) on fake ports: the record decides what exists and
where, another tenant's job is not found, a delete marks the record and removes every object."""

from __future__ import annotations

import json
import logging

import pytest

from services.storage.assets import answer
from services.storage.handlers import facts_of, key_of
from services.storage.ports import Deps
from shared.contracts import AssetRef, Event, JobRecordV1, JobStatus
from shared.contracts.assets import AssetsReplyV1, assets_subject
from shared.provider import VideoProvider
from shared.provider.wire import VARIANTS
from tests.component.harness import TENANT, job_record, new_job_id
from tests.fakes import FakeProvider, InMemoryAssetStore, InMemoryJobStore, StoredObject

CONTENT = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/jpeg"}


def completed(job_id: str, store: InMemoryAssetStore) -> JobRecordV1:
    """A completed record whose three variants are in `store`."""
    record = job_record(job_id, JobStatus.COMPLETED, upstream_id="video_x")
    facts = facts_of(record)
    assets = []
    for variant in VARIANTS:
        key = key_of(facts, variant)
        store.objects[key] = StoredObject(b"abc", CONTENT[variant])
        assets.append(
            AssetRef(
                variant=variant,
                bucket=store.bucket,
                key=key,
                size_bytes=3,
                sha256="0" * 64,
                content_type=CONTENT[variant],
            )
        )
    return record.model_copy(update={"assets": assets})


def deps_with(*records: JobRecordV1) -> tuple[Deps, InMemoryJobStore, InMemoryAssetStore]:
    jobs, store = InMemoryJobStore(records), InMemoryAssetStore("clipline-assets")
    provider: VideoProvider = FakeProvider()
    return Deps(jobs, _no_emit, provider, store), jobs, store


async def _no_emit(event: Event) -> None:
    raise AssertionError("the assets request emits nothing")


async def ask(deps: Deps, tenant: str, **request: object) -> AssetsReplyV1:
    return await answer(deps, assets_subject(tenant), json.dumps(request).encode())


async def test_presign_gives_a_url_per_stored_variant_from_the_record() -> None:
    deps, jobs, store = deps_with()
    job_id = new_job_id()
    record = completed(job_id, store)
    jobs.put(record)
    reply = await ask(deps, TENANT, job_id=job_id, action="presign")
    assert reply.error is None
    assert [u.variant for u in reply.urls] == list(VARIANTS)
    assert reply.urls[0].url.startswith(f"https://s3.test/clipline-assets/{record.assets[0].key}")
    assert reply.expires_at is not None
    internal = await ask(
        deps, TENANT, job_id=job_id, action="presign", variant="thumbnail", audience="internal"
    )
    assert [u.variant for u in internal.urls] == ["thumbnail"]
    assert internal.urls[0].url.startswith("https://s3.internal/")
    assert internal.urls[0].content_type == "image/webp"


async def test_another_tenants_job_is_not_found_and_nothing_happens() -> None:
    deps, jobs, store = deps_with()
    job_id = new_job_id()
    jobs.put(completed(job_id, store))
    before = dict(store.objects)
    for action in ("presign", "delete"):
        reply = await ask(deps, "other", job_id=job_id, action=action)
        assert (reply.error, reply.urls) == ("not_found", [])
    assert store.objects == before
    assert jobs.writes == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (JobStatus.GENERATING, "not_finished"),
        (JobStatus.STORING, "not_finished"),
        (JobStatus.FAILED, "no_assets"),
        (JobStatus.CANCELLED, "no_assets"),
    ],
)
async def test_presign_of_a_job_without_stored_assets_is_refused(
    status: JobStatus, error: str
) -> None:
    job_id = new_job_id()
    deps, _, _ = deps_with(job_record(job_id, status, upstream_id="video_x"))
    reply = await ask(deps, TENANT, job_id=job_id, action="presign")
    assert (reply.error, reply.urls) == (error, [])


async def test_delete_marks_the_record_removes_every_object_and_repeats_harmlessly() -> None:
    deps, jobs, store = deps_with()
    job_id = new_job_id()
    jobs.put(completed(job_id, store))
    other = new_job_id()
    jobs.put(completed(other, store))
    reply = await ask(deps, TENANT, job_id=job_id, action="delete")
    assert reply.error is None
    assert reply.deleted_at is not None
    assert not [k for k in store.objects if job_id in k]
    assert len([k for k in store.objects if other in k]) == 3  # the other job keeps its own
    record = await jobs.get(TENANT, job_id)
    assert record is not None
    assert record.deleted_at == reply.deleted_at
    again = await ask(deps, TENANT, job_id=job_id, action="delete")
    assert (again.error, again.deleted_at) == (None, reply.deleted_at)
    gone = await ask(deps, TENANT, job_id=job_id, action="presign")
    assert gone.error == "deleted"


async def test_a_job_still_running_is_not_deleted() -> None:
    job_id = new_job_id()
    deps, jobs, _ = deps_with(job_record(job_id, JobStatus.GENERATING, upstream_id="video_x"))
    reply = await ask(deps, TENANT, job_id=job_id, action="delete")
    assert reply.error == "not_finished"
    assert jobs.writes == []


async def test_a_failed_job_is_deleted_too() -> None:
    job_id = new_job_id()
    deps, jobs, _ = deps_with(job_record(job_id, JobStatus.FAILED, reason="x", detail="y"))
    reply = await ask(deps, TENANT, job_id=job_id, action="delete")
    assert reply.error is None
    record = await jobs.get(TENANT, job_id)
    assert record is not None
    assert record.deleted_at is not None


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"job_id": "job_1", "action": "presign"}',
        b'{"job_id": "job_' + b"0" * 32 + b'", "action": "explode"}',
        b'{"job_id": "job_' + b"0" * 32 + b'", "action": "presign", "bucket": "x"}',
    ],
)
async def test_a_bad_request_gets_a_typed_refusal(body: bytes) -> None:
    deps, _, _ = deps_with()
    reply = await answer(deps, assets_subject(TENANT), body)
    assert reply.error == "invalid_request"


async def test_an_outage_is_unavailable_never_a_crash() -> None:
    deps, jobs, store = deps_with()
    job_id = new_job_id()
    jobs.put(completed(job_id, store))
    store.down = True
    reply = await ask(deps, TENANT, job_id=job_id, action="delete")
    assert reply.error == "unavailable"


async def test_presigned_urls_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    deps, jobs, store = deps_with()
    job_id = new_job_id()
    jobs.put(completed(job_id, store))
    reply = await ask(deps, TENANT, job_id=job_id, action="presign")
    assert reply.urls
    store.down = True  # and a failing one logs its error, not a URL
    assert (await ask(deps, TENANT, job_id=job_id, action="delete")).error == "unavailable"
    assert caplog.records  # the failure was logged...
    assert "X-Amz-Signature" not in caplog.text  # ...without a credential

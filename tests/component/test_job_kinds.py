"""Remix, edit and extend in process: intake's refusals (native API and the OpenAI facade), and
the submitter sending each kind to its upstream endpoint with the source's upstream id read from
the SOURCE JOB'S record (a FakeProvider, then the simulator's own API over ASGI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.intake.facade_map import video_id
from services.simulator.app import build_app
from services.simulator.assets import AssetCache, AssetKey
from services.simulator.settings import SimulatorSettings
from services.submitter.app import build_router
from services.submitter.ports import Deps as SubmitterDeps
from shared.contracts import JobFailedV1, JobRecordV1, JobSpec, JobStatus, JobSubmittedV1
from shared.contracts.lifecycle import CreateOutcome
from shared.provider import OpenAIVideosProvider, ProviderNotFound
from tests.component.facade_support import serving as facade_serving
from tests.component.harness import Fakes, admitted, job_record, new_job_id, running
from tests.component.support import Submitter, running_submitter
from tests.component.test_intake_http import serving as http_serving
from tests.fakes import FakeClock, InMemoryJobStore, bearer, upstream_video

SOURCE_SPEC = JobSpec(model="sora-2", size="1280x720", seconds=8, prompt="a paper boat")


def completed_source(jobs: InMemoryJobStore, tenant: str, **changes: Any) -> JobRecordV1:
    record = job_record(new_job_id(), JobStatus.COMPLETED, spec=SOURCE_SPEC, **changes)
    record = record.model_copy(update={"tenant": tenant})
    jobs.put(record)
    return record


# -- intake, native API --------------------------------------------------------------------------


async def test_native_api_takes_a_remix_and_an_extension_of_the_tenants_own_job() -> None:
    jobs = InMemoryJobStore()
    source = completed_source(jobs, "acme", upstream_id="video_src")
    async with http_serving(jobs) as api:
        remix = await api.client.post(
            "/v1/jobs",
            json={"kind": "remix", "source_job_id": source.job_id, "prompt": "at night"},
            headers=bearer("acme"),
        )
        assert remix.status_code == 202, remix.text
        extend = await api.client.post(
            "/v1/jobs",
            json={"kind": "extend", "source_job_id": source.job_id, "prompt": "on", "seconds": 4},
            headers=bearer("acme"),
        )
        assert extend.status_code == 202, extend.text
    made = await jobs.get("acme", remix.json()["job_id"])
    assert made is not None
    assert (made.spec.kind, made.spec.source_job_id) == ("remix", source.job_id)
    assert (made.spec.model, made.spec.size, made.spec.seconds) == ("sora-2", "1280x720", 8)
    longer = await jobs.get("acme", extend.json()["job_id"])
    assert longer is not None
    assert (longer.spec.seconds, longer.spec.total_seconds, longer.spec.extensions) == (4, 12, 1)


@pytest.mark.parametrize(
    ("status", "source_tenant", "extra", "code", "reason"),
    [
        (JobStatus.COMPLETED, "globex", {}, 404, "source_not_found"),  # another tenant's
        (JobStatus.GENERATING, "acme", {}, 409, "source_not_completed"),
        (JobStatus.FAILED, "acme", {}, 409, "source_not_completed"),
        (JobStatus.COMPLETED, "acme", {"model": "sora-2-pro"}, 422, "invalid_request"),
    ],
)
async def test_native_api_refuses_a_source_it_cannot_use(
    status: JobStatus, source_tenant: str, extra: dict[str, Any], code: int, reason: str
) -> None:
    jobs = InMemoryJobStore()
    record = job_record(new_job_id(), status, spec=SOURCE_SPEC)
    jobs.put(record.model_copy(update={"tenant": source_tenant}))
    async with http_serving(jobs) as api:
        body = {"kind": "remix", "source_job_id": record.job_id, "prompt": "x"} | extra
        answer = await api.client.post("/v1/jobs", json=body, headers=bearer("acme"))
    assert answer.status_code == code, answer.text
    assert answer.json()["reason"] == reason
    assert answer.json()["field"] in ("source_job_id", "model")
    assert [r.job_id for r in await jobs.list("acme")] == (
        [record.job_id] if source_tenant == "acme" else []
    )  # nothing recorded


async def test_native_api_refuses_a_seventh_extension_and_past_120_seconds() -> None:
    jobs = InMemoryJobStore()
    chained = SOURCE_SPEC.model_copy(
        update={"kind": "extend", "seconds": 4, "total_seconds": 28, "extensions": 6}
    )
    seventh = completed_source(jobs, "acme").model_copy(update={"spec": chained})
    jobs.put(seventh)
    long = SOURCE_SPEC.model_copy(update={"kind": "extend", "total_seconds": 116, "extensions": 2})
    full = completed_source(jobs, "acme").model_copy(update={"spec": long})
    jobs.put(full)
    async with http_serving(jobs) as api:
        for source in (seventh, full):
            body = {"kind": "extend", "source_job_id": source.job_id, "prompt": "x", "seconds": 8}
            answer = await api.client.post("/v1/jobs", json=body, headers=bearer("acme"))
            assert answer.status_code == 422, answer.text
            assert answer.json()["reason"] == "extension_limit"


# -- intake, the OpenAI facade -------------------------------------------------------------------


async def test_facade_remix_and_extension_answer_video_objects() -> None:
    async with facade_serving() as s:
        source = s.completed(new_job_id(), spec=SOURCE_SPEC)
        vid = video_id(source.job_id)
        remix = await s.client.post(f"/v1/videos/{vid}/remix", json={"prompt": "at night"})
        assert remix.status_code == 200, remix.text
        assert remix.json()["remixed_from_video_id"] == vid
        assert (remix.json()["seconds"], remix.json()["status"]) == ("8", "queued")
        extension = await s.client.post(
            "/v1/videos/extensions",
            files={"prompt": (None, "further"), "seconds": (None, "4"), "video[id]": (None, vid)},
        )
        assert extension.status_code == 200, extension.text
        assert extension.json()["seconds"] == "12"  # the stitched total
        assert extension.json()["remixed_from_video_id"] is None
        edit = await s.client.post(
            "/v1/videos/edits", json={"prompt": "in red", "video": {"id": vid}}
        )
        assert edit.status_code == 200, edit.text
        kinds = sorted(r.spec.kind for r in await s.jobs.list("acme") if r.job_id != source.job_id)
        assert kinds == ["edit", "extend", "remix"]


async def test_facade_refuses_another_tenants_or_an_unfinished_source_in_openais_envelope() -> None:
    async with facade_serving() as s:
        theirs = s.completed(new_job_id(), tenant="globex", spec=SOURCE_SPEC)
        running_one = job_record(new_job_id(), JobStatus.GENERATING, spec=SOURCE_SPEC)
        s.jobs.put(running_one.model_copy(update={"tenant": "acme"}))
        for path, body in (
            (f"/v1/videos/{video_id(theirs.job_id)}/remix", {"prompt": "x"}),
            ("/v1/videos/edits", {"prompt": "x", "video": {"id": video_id(theirs.job_id)}}),
            ("/v1/videos/video_nope/remix", {"prompt": "x"}),
        ):
            answer = await s.client.post(path, json=body)
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["code"] == "not_found"
            assert "job" not in answer.json()["error"]["message"]  # OpenAI's words, not ours
        unfinished = await s.client.post(
            f"/v1/videos/{video_id(running_one.job_id)}/remix", json={"prompt": "x"}
        )
        assert unfinished.status_code == 409
        assert unfinished.json()["error"]["code"] == "video_not_ready"
        assert unfinished.json()["error"]["message"] == (
            f"Video '{video_id(running_one.job_id)}' is not completed: only a completed video "
            "can be remixed, edited or extended."
        )
        assert unfinished.headers["x-should-retry"] == "false"
        missing = await s.client.post("/v1/videos/extensions", json={"prompt": "x"})
        assert missing.status_code == 400
        assert missing.json()["error"]["param"] == "video"
        upload = await s.client.post(
            "/v1/videos/edits",
            files={"prompt": (None, "x"), "video": ("a.mp4", b"\0", "video/mp4")},
        )
        assert upload.status_code == 400
        assert upload.json()["error"]["code"] == "unsupported_value"


# -- submitter -----------------------------------------------------------------------------------


@pytest.fixture
async def submitter() -> AsyncIterator[Submitter]:
    async with running_submitter(3) as s:
        yield s


def derived_job(s: Submitter, kind: str, source_id: str, **spec: Any) -> Any:
    made = SOURCE_SPEC.model_copy(
        update={"kind": kind, "source_job_id": source_id, "prompt": f"{kind} it"} | spec
    )
    job_id = new_job_id()
    s.h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=made, cost_micros=400_000))
    return admitted(job_id, made)


def source_record(s: Submitter, upstream_id: str | None) -> JobRecordV1:
    record = job_record(
        new_job_id(), JobStatus.COMPLETED, spec=SOURCE_SPEC, upstream_id=upstream_id
    )
    s.h.jobs.put(record)
    return record


@pytest.mark.parametrize("kind", ["remix", "edit", "extend"])
async def test_each_kind_is_sent_from_the_source_records_upstream_id(
    submitter: Submitter, kind: str
) -> None:
    h, provider = submitter.h, submitter.provider
    source = source_record(submitter, "video_src")
    event = derived_job(submitter, kind, source.job_id)
    provider.creates.append(upstream_video(f"video_{kind}"))
    await h.send(event)
    assert [(c.kind, c.source_video_id, c.prompt) for c in provider.created] == [
        (kind, "video_src", f"{kind} it")
    ]
    assert h.bus.one(JobSubmittedV1).upstream_id == f"video_{kind}"


@pytest.mark.parametrize("upstream_id", [None, "missing record"])
async def test_a_source_without_an_upstream_video_fails_the_job_and_sends_nothing(
    submitter: Submitter, upstream_id: str | None
) -> None:
    h, provider = submitter.h, submitter.provider
    source_id = new_job_id() if upstream_id else source_record(submitter, None).job_id
    event = derived_job(submitter, "remix", source_id)
    await h.send(event)
    assert provider.created == []
    failed = h.bus.one(JobFailedV1)
    assert (failed.reason, failed.stage) == ("source_unavailable", "submitter")
    assert source_id in failed.detail
    assert h.jobs.records()[event.job_id].status == JobStatus.FAILED


async def test_a_source_gone_upstream_fails_once_never_loops(submitter: Submitter) -> None:
    h, provider = submitter.h, submitter.provider
    source = source_record(submitter, "video_src")
    event = derived_job(submitter, "extend", source.job_id, seconds=4, total_seconds=12)
    provider.creates.append(ProviderNotFound("No video found", status=404))
    await h.send(event)
    assert len(provider.created) == 1
    failed = h.bus.one(JobFailedV1)
    assert failed.reason == "source_gone"
    assert "video_src" in failed.detail
    record = h.jobs.records()[event.job_id]
    assert record.status == JobStatus.FAILED
    assert record.create_may_exist is False  # nothing made: its reservation is released


# -- the submitter against the simulator's own API -----------------------------------------------


def _frames(key: AssetKey) -> bytes:
    return f"{key.variant}:{key.seconds}".encode() * 16


async def test_the_simulator_sees_one_create_of_each_kind_from_the_sources_upstream_id() -> None:
    clock = FakeClock()
    simulator = build_app(
        SimulatorSettings(
            api_key=SecretStr("sk-sim"), queue_seconds=1.0, generation_seconds=1.0,
            rate_limit_tier="off",
        ),
        clock=clock,
        cache=AssetCache(fps=12, renderer=_frames),
    )  # fmt: skip
    transport = httpx.ASGITransport(app=simulator)
    client = httpx.AsyncClient(
        transport=transport,
        base_url="http://simulator/v1/",
        headers={"Authorization": "Bearer sk-sim"},
    )
    provider = OpenAIVideosProvider(client)
    first = await client.post(
        "videos", json={"prompt": "a boat", "seconds": "8", "size": "1280x720"}
    )
    upstream_source = first.json()["id"]
    clock.advance(5.0)

    def deps(f: Fakes) -> SubmitterDeps:
        return SubmitterDeps(f.jobs, f.inputs, f.upstream, provider, f.emit, 3600.0)

    try:
        async with running(build_router(3), deps) as h:
            source = job_record(
                new_job_id(), JobStatus.COMPLETED, spec=SOURCE_SPEC, upstream_id=upstream_source
            )
            h.jobs.put(source)
            sent = []
            for kind, extra in (("remix", {}), ("edit", {}), ("extend", {"seconds": 4})):
                spec = SOURCE_SPEC.model_copy(
                    update={"kind": kind, "source_job_id": source.job_id, "prompt": kind} | extra
                )
                job_id = new_job_id()
                h.jobs.put(job_record(job_id, JobStatus.ADMITTED, spec=spec, cost_micros=400_000))
                await h.send(admitted(job_id, spec))
                sent.append(job_id)
            answer = await client.get("http://simulator/control/creates")
            creates = answer.json()[1:]
            assert [(c["kind"], c["source_video_id"]) for c in creates] == [
                ("remix", upstream_source),
                ("edit", upstream_source),
                ("extension", upstream_source),
            ]
            assert [c["client_request_id"] for c in creates] == sent
            assert [c["seconds"] for c in creates] == ["8", "8", "12"]  # listed: stitched
            for job_id in sent:
                assert h.jobs.records()[job_id].status == JobStatus.SUBMITTED
    finally:
        await client.aclose()
        await simulator.aclose()


async def test_a_lost_extension_is_adopted_by_its_stitched_total_and_source(
    submitter: Submitter,
) -> None:
    """A create whose answer was lost: the listing shows the extension at its stitched total
    (12 s, not the 4 it added), and a remix of another video with the same prompt is not it."""
    h, provider = submitter.h, submitter.provider
    source = source_record(submitter, "video_src")
    event = derived_job(submitter, "extend", source.job_id, seconds=4, total_seconds=12)
    record = h.jobs.records()[event.job_id]
    attempt = datetime.now(UTC) - timedelta(seconds=5)
    h.jobs.put(
        record.model_copy(
            update={
                "status": JobStatus.SUBMITTING,
                "history": {**record.history, JobStatus.SUBMITTING.value: attempt},
                "submit_attempts": 1,
                "last_attempt_at": attempt,
                "create_outcome": CreateOutcome.NO_ANSWER,
            }
        )
    )
    created = int(attempt.timestamp())
    look = {"prompt": "extend it", "created_at": created, "size": "1280x720"}
    provider.listed = [
        upstream_video("video_four", seconds="4").model_copy(update=look),
        upstream_video("video_elses", seconds="12").model_copy(
            update=look | {"remixed_from_video_id": "video_other"}
        ),
        upstream_video("video_ext", seconds="12").model_copy(update=look),
    ]
    await h.send(event)
    assert provider.created == []
    assert h.jobs.records()[event.job_id].upstream_id == "video_ext"

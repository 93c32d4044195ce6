"""Cancel under TestNatsBroker and over intake's HTTP API: asked once, ended by whichever stage
meets the job (the submitter at once on `cancel_requested`, unless a create is in flight), and
settled by the billing policy: released before submission, the estimate charged after it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from services.poller.app import build_router as build_poller
from services.poller.domain import PollPolicy
from services.poller.ports import Deps as PollerDeps
from services.poller.ports import WebhookDeps
from services.poller.webhooks import PATH, build_webhooks
from services.pricing_guard.adapters import KvBudgets
from services.storage.app import build_router as build_storage
from services.storage.domain import object_key
from services.storage.ports import Deps as StorageDeps
from services.storage.ports import Stored
from shared.contracts import (
    JobAdmittedV1,
    JobCancelledV1,
    JobCancelRequestedV1,
    JobRecordV1,
    JobStatus,
    JobSubmittedV1,
)
from shared.contracts import lifecycle as lc
from shared.contracts.ids import fact_event_id
from shared.contracts.lifecycle import CreateOutcome
from shared.jobstore import advance
from shared.provider import CreateVideo, ProviderNotSent, UpstreamVideo
from tests.component.harness import (
    TENANT,
    Harness,
    accepted,
    admitted,
    job_record,
    new_event_id,
    new_job_id,
    running,
)
from tests.component.support import Submitter, actions, running_submitter, settled
from tests.component.test_intake_http import ACME, Api, serving
from tests.component.test_storage import ASSETS, generated
from tests.fakes import (
    FakeProvider,
    InMemoryAssetStore,
    InMemoryJobStore,
    InMemorySeenWebhooks,
    bearer,
    upstream_video,
)
from tests.webhook_signing import SECRET, event_body, signed


async def single(data: bytes) -> AsyncIterator[bytes]:
    yield data


COST = 400_000
VIDEO = "video_abc"


def cancel_requested(job_id: str) -> JobCancelRequestedV1:
    return JobCancelRequestedV1(
        event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id, tenant=TENANT
    )


def asked_to_cancel(record: JobRecordV1) -> JobRecordV1:
    return lc.request_cancel(record, datetime.now(UTC))


def admitted_record(job_id: str) -> JobRecordV1:
    return lc.admit(job_record(job_id, JobStatus.ACCEPTED), datetime.now(UTC), cost_micros=COST)


# -- intake: POST /v1/jobs/{id}/cancel --------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serving(InMemoryJobStore()) as a:
        yield a


async def test_cancel_records_cancelling_and_announces_it_once_per_fact(api: Api) -> None:
    job_id = (await api.post(key="k1", **ACME)).json()["job_id"]

    first = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    again = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)

    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["status"] == again.json()["status"] == "cancelling"
    record = await api.jobs.get("acme", job_id)
    assert record is not None
    assert record.status == JobStatus.CANCELLING
    asks = [e for e in api.emitted.events if isinstance(e, JobCancelRequestedV1)]
    # Announced again on the repeat (its first announcement may have been lost): one fact id.
    assert {e.event_id for e in asks} == {fact_event_id(job_id, "cancel_requested")}
    assert len(asks) == 2


async def test_a_cancelled_job_answers_200_and_is_not_announced_again(api: Api) -> None:
    job_id = new_job_id()
    api.jobs.put(job_record(job_id, JobStatus.CANCELLED).model_copy(update={"tenant": "acme"}))

    r = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)

    assert (r.status_code, r.json()["status"]) == (200, "cancelled")
    assert api.emitted.events == []


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.REJECTED])
async def test_a_job_that_ended_otherwise_is_a_conflict_naming_its_status(
    api: Api, status: JobStatus
) -> None:
    job_id = new_job_id()
    api.jobs.put(job_record(job_id, status).model_copy(update={"tenant": "acme"}))

    r = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)

    assert r.status_code == 409
    error = r.json()
    assert (error["reason"], error["job_status"]) == ("already_ended", status.value)
    assert status.value in error["detail"]
    assert (await api.jobs.get("acme", job_id)).status == status  # type: ignore[union-attr]
    assert api.emitted.events == []


async def test_an_unknown_or_another_tenants_job_is_not_found(api: Api) -> None:
    job_id = (await api.post(key="k1", **ACME)).json()["job_id"]

    other = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer("b"))
    unknown = await api.client.post(f"/v1/jobs/{new_job_id()}/cancel", headers=ACME)
    malformed = await api.client.post("/v1/jobs/not-a-job/cancel", headers=ACME)

    assert [r.status_code for r in (other, unknown, malformed)] == [404, 404, 404]
    assert other.json()["reason"] == "not_found"
    assert (await api.jobs.get("acme", job_id)).status == JobStatus.ACCEPTED  # type: ignore[union-attr]


async def test_nats_down_is_503_and_the_retry_announces_the_cancel(api: Api) -> None:
    job_id = (await api.post(key="k1", **ACME)).json()["job_id"]
    api.emitted.down = True

    down = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)
    api.emitted.down = False
    retried = await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=ACME)

    assert (down.status_code, down.json()["reason"]) == (503, "unavailable")
    assert retried.status_code == 200  # recorded by the first, announced by the retry
    assert [type(e) for e in api.emitted.events][-1] is JobCancelRequestedV1


# -- submitter: the prompt end, and creates that race a cancel ----------------------------------


@pytest.fixture
async def submitter() -> AsyncIterator[Submitter]:
    async with running_submitter(5) as s:
        yield s


async def test_cancel_requested_ends_a_job_before_submission_at_once(
    submitter: Submitter,
) -> None:
    h = submitter.h
    job_id = new_job_id()
    h.jobs.put(asked_to_cancel(admitted_record(job_id)))
    event = cancel_requested(job_id)

    await h.send(event)

    record = h.jobs.records()[job_id]
    assert (record.status, record.stage, record.reason) == (
        JobStatus.CANCELLED, "submitter", "cancelled",
    )  # fmt: skip
    assert record.create_may_exist is None  # no attempt: billing releases it
    done = h.bus.one(JobCancelledV1)
    assert (done.event_id, done.stage, done.upstream_id) == (
        fact_event_id(job_id, "cancelled"), "submitter", None,
    )  # fmt: skip
    assert actions(h.outcomes(event)) == ["ack"]
    # Its admission, redelivered later, creates nothing and announces the end again.
    await h.send(admitted(job_id), delivery=2)
    assert submitter.provider.created == []
    assert [e.event_id for e in h.bus.events(JobCancelledV1)] == [done.event_id] * 2


async def test_an_admitted_delivery_that_finds_the_job_cancelling_ends_it(
    submitter: Submitter,
) -> None:
    h = submitter.h
    job_id = new_job_id()
    h.jobs.put(asked_to_cancel(admitted_record(job_id)))

    await h.send(admitted(job_id))

    assert submitter.provider.created == []
    assert h.jobs.records()[job_id].status == JobStatus.CANCELLED
    assert h.bus.kinds() == ["admitted", "cancelled"]


async def test_cancel_requested_waits_for_a_create_in_flight(submitter: Submitter) -> None:
    h = submitter.h
    job_id = new_job_id()
    h.jobs.put(asked_to_cancel(lc.begin_submit(admitted_record(job_id), datetime.now(UTC))))
    event = cancel_requested(job_id)

    await h.send(event)

    assert h.jobs.records()[job_id].status == JobStatus.CANCELLING
    [(action, delay)] = settled(h.outcomes(event))
    assert action == "nak"
    assert delay is not None
    assert 0 < delay <= 6.5
    assert h.bus.events(JobCancelledV1) == []


async def test_a_create_whose_process_died_is_cancelled_with_its_fate_unknown(
    submitter: Submitter,
) -> None:
    h = submitter.h
    job_id = new_job_id()
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    h.jobs.put(asked_to_cancel(lc.begin_submit(admitted_record(job_id), long_ago)))

    await h.send(cancel_requested(job_id))

    record = h.jobs.records()[job_id]
    assert (record.status, record.create_outcome) == (JobStatus.CANCELLED, CreateOutcome.IN_FLIGHT)
    assert record.create_may_exist  # billing disputes it: never silently refunded


class CancelledDuringCreate(FakeProvider):
    """A provider whose create is answered only after a client asked to cancel the job."""

    def __init__(self, jobs: InMemoryJobStore) -> None:
        super().__init__()
        self.jobs = jobs

    async def create(self, request: CreateVideo) -> UpstreamVideo:
        await advance(self.jobs, _Job(request.client_request_id), lc.request_cancel)
        return await super().create(request)


class _Job:
    def __init__(self, job_id: str) -> None:
        self.job_id, self.tenant = job_id, TENANT


async def cancelled_during_create(
    submitter: Submitter, answer: UpstreamVideo | Exception
) -> tuple[CancelledDuringCreate, str, JobAdmittedV1]:
    """An admitted job whose create is answered with `answer`, asked to cancel meanwhile."""
    provider = CancelledDuringCreate(submitter.h.jobs)
    provider.creates = [answer]
    object.__setattr__(submitter.h.deps, "provider", provider)
    job_id = new_job_id()
    submitter.h.jobs.put(admitted_record(job_id))
    event = admitted(job_id)
    await submitter.h.send(event)
    return provider, job_id, event


async def test_a_create_answered_after_the_cancel_is_cancelled_with_its_sunk_cost(
    submitter: Submitter,
) -> None:
    h = submitter.h
    _, job_id, event = await cancelled_during_create(submitter, upstream_video("video_9"))

    record = h.jobs.records()[job_id]
    assert (record.status, record.upstream_id) == (JobStatus.CANCELLED, "video_9")
    assert record.create_outcome == CreateOutcome.CREATED
    assert "submitted" not in record.history  # never followed
    assert h.bus.one(JobCancelledV1).upstream_id == "video_9"
    assert h.bus.events(JobSubmittedV1) == []
    assert await h.upstream.owner("video_9") == (TENANT, job_id)
    assert actions(h.outcomes(event)) == ["ack"]


async def test_a_create_that_failed_after_the_cancel_records_its_outcome_and_ends(
    submitter: Submitter,
) -> None:
    h = submitter.h
    provider, job_id, event = await cancelled_during_create(
        submitter, ProviderNotSent("POST videos: ConnectError")
    )

    record = h.jobs.records()[job_id]
    assert (record.status, record.create_outcome) == (JobStatus.CANCELLED, CreateOutcome.NOT_SENT)
    assert record.create_may_exist is False  # billing releases it
    assert actions(h.outcomes(event)) == ["ack"]  # not retried
    assert len(provider.created) == 1


# -- poller and storage: stop following, store nothing ------------------------------------------

POLICY = PollPolicy(default_delay=5.0, min_delay=0.2, max_delay=30.0, deadline=3 * 3600.0)


def submitted_record(job_id: str, status: JobStatus = JobStatus.GENERATING) -> JobRecordV1:
    return job_record(job_id, status, upstream_id=VIDEO, cost_micros=COST, progress=40)


async def test_the_poller_stops_following_a_cancelling_job() -> None:
    provider = FakeProvider()
    async with running(build_poller(), lambda f: PollerDeps(f.jobs, f.emit, provider, POLICY)) as h:
        job_id = new_job_id()
        h.jobs.put(asked_to_cancel(submitted_record(job_id)))
        event = JobSubmittedV1(
            event_id=new_event_id(), occurred_at=datetime.now(UTC), job_id=job_id,
            tenant=TENANT, spec=admitted(job_id).spec, cost_micros=COST, upstream_id=VIDEO,
        )  # fmt: skip

        await h.send(event)
        await h.send(event, delivery=2)  # its next poll finds it ended: not polled either

    assert provider.retrieved == []
    record = h.jobs.records()[job_id]
    assert (record.status, record.stage, record.upstream_id) == (
        JobStatus.CANCELLED, "poller", VIDEO,
    )  # fmt: skip
    assert "sunk cost" in (record.detail or "")
    # Announced again by the second delivery (its first may have been lost): one fact id.
    assert {(e.event_id, e.upstream_id) for e in h.bus.events(JobCancelledV1)} == {
        (fact_event_id(job_id, "cancelled"), VIDEO)
    }
    assert actions(h.outcomes(event)) == ["ack", "ack"]


class CancelledWhileStoring(InMemoryAssetStore):
    """An asset store during whose first upload a client asks to cancel the job."""

    def __init__(self, jobs: InMemoryJobStore) -> None:
        super().__init__("clipline-assets")
        self.jobs = jobs

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
        *,
        length: int | None = None,
    ) -> Stored:
        tenant, *_, job_id, _ = key.split("/")
        record = await self.jobs.get(tenant, job_id)
        if record is not None and record.status == JobStatus.STORING:
            await self.jobs.update(tenant, job_id, lambda r: r and asked_to_cancel(r))
        return await super().put_stream(key, chunks, content_type, metadata)


@pytest.mark.parametrize("when", ["before", "while storing"])
async def test_storage_keeps_nothing_of_a_cancelled_job(when: str) -> None:
    provider = FakeProvider(assets=dict(ASSETS), chunk_size=5)
    jobs = InMemoryJobStore()
    store = CancelledWhileStoring(jobs)
    router = build_storage(3)
    deps = lambda f: StorageDeps(f.jobs, f.emit, provider, store)  # noqa: E731
    async with running(router, deps, jobs=jobs) as h:
        job_id = new_job_id()
        record = submitted_record(job_id, JobStatus.GENERATED)
        h.jobs.put(asked_to_cancel(record) if when == "before" else record)
        await h.send(generated(job_id))

    assert store.objects == {}
    assert (provider.downloaded == []) == (when == "before")
    done = h.jobs.records()[job_id]
    assert (done.status, done.stage, done.assets) == (JobStatus.CANCELLED, "storage", [])
    assert h.bus.kinds() == ["generated", "cancelled"]


@pytest.mark.parametrize("ended_by", ["submitter", None])
async def test_a_store_cut_short_leaves_nothing_whoever_ended_the_job(ended_by: str | None) -> None:
    """Storage died mid-upload; meanwhile the job was cancelled (by the submitter, on
    cancel_requested), or is still cancelling: the redelivery deletes what was uploaded."""
    provider = FakeProvider(assets=dict(ASSETS), chunk_size=5)
    store = InMemoryAssetStore("clipline-assets")
    async with running(
        build_storage(3), lambda f: StorageDeps(f.jobs, f.emit, provider, store)
    ) as h:
        job_id = new_job_id()
        storing = lc.begin_store(submitted_record(job_id, JobStatus.GENERATED), datetime.now(UTC))
        cancelling = asked_to_cancel(storing)
        h.jobs.put(
            cancelling
            if ended_by is None
            else lc.cancel(cancelling, datetime.now(UTC), stage=ended_by)
        )
        left = object_key(TENANT, job_id, "video", storing.history["accepted"])
        await store.put_stream(left, single(b"half an upload"), "video/mp4", {})
        await h.send(generated(job_id))

    assert store.objects == {}
    assert provider.downloaded == []
    assert h.jobs.records()[job_id].status == JobStatus.CANCELLED


# -- pricing_guard: no admission after a cancel; settlement by the billing policy ---------------


async def test_a_cancelling_job_is_not_admitted(guard: Harness, budgets: KvBudgets) -> None:
    job_id = new_job_id()
    guard.jobs.put(asked_to_cancel(job_record(job_id, JobStatus.ACCEPTED)))

    await guard.send(accepted(job_id))

    record = guard.jobs.records()[job_id]
    assert (record.status, record.stage) == (JobStatus.CANCELLED, "pricing_guard")
    assert guard.bus.kinds() == ["accepted", "cancelled"]
    assert guard.bus.events(JobAdmittedV1) == []
    await guard.send(guard.bus.one(JobCancelledV1))  # settled: closed at $0, nothing reserved
    reservation = await budgets.reservation(TENANT, job_id)
    assert reservation is not None
    assert reservation.charged_micros == 0


@pytest.mark.parametrize(
    ("upstream_id", "state", "charged"), [(None, "released", 0), ("video_9", "charged", COST)]
)
async def test_a_cancelled_job_is_released_before_submission_and_charged_after(
    guard: Harness, budgets: KvBudgets, upstream_id: str | None, state: str, charged: int
) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    await guard.send(accepted(job_id))  # reserved and admitted
    submitting = lc.begin_submit(guard.jobs.records()[job_id], datetime.now(UTC))
    if upstream_id is None:  # the create never left
        n = submitting.submit_attempts
        submitting = lc.end_attempt(
            submitting, datetime.now(UTC), attempt=n, outcome=CreateOutcome.NOT_SENT
        )
    cancelling = asked_to_cancel(submitting)
    done = lc.cancel(cancelling, datetime.now(UTC), stage="submitter", upstream_id=upstream_id)
    guard.jobs.put(done)

    await guard.send(JobCancelledV1.fact(done, detail=done.detail, stage="submitter"))

    reservation = await budgets.reservation(TENANT, job_id)
    assert reservation is not None
    assert (reservation.state, reservation.charged_micros) == (state, charged)
    assert [e.settlement for e in await budgets.spend(TENANT)] == [state]
    assert guard.jobs.records()[job_id].charged_micros == charged


async def test_a_redelivered_admission_leaves_a_create_in_flight_to_the_submitter(
    guard: Harness,
) -> None:
    job_id = new_job_id()
    guard.jobs.put(job_record(job_id, JobStatus.ACCEPTED))
    await guard.send(accepted(job_id))  # admitted
    in_flight = lc.begin_submit(guard.jobs.records()[job_id], datetime.now(UTC))
    guard.jobs.put(asked_to_cancel(in_flight))

    await guard.send(accepted(job_id), delivery=2)

    assert guard.jobs.records()[job_id].status == JobStatus.CANCELLING  # its answer decides
    assert guard.bus.events(JobCancelledV1) == []


async def test_a_webhook_cancelling_a_job_not_yet_submitted_records_its_video() -> None:
    """The cancel came between the link and `submitted`: the webhook's video is the job's
    (the index says so), so the sunk cost is charged, not disputed."""
    provider = FakeProvider()
    async with running(build_poller(), lambda f: PollerDeps(f.jobs, f.emit, provider, POLICY)) as h:
        job_id = new_job_id()
        h.jobs.put(asked_to_cancel(job_record(job_id, JobStatus.SUBMITTING, cost_micros=COST)))
        h.upstream.links[VIDEO] = (TENANT, job_id)
        api = build_webhooks(
            WebhookDeps(h.deps, h.upstream, InMemorySeenWebhooks(), Webhook(SECRET))
        )
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
            body = event_body(VIDEO)
            answer = await client.post(PATH, content=body, headers=signed(body))

    assert answer.status_code == 202
    record = h.jobs.records()[job_id]
    assert (record.status, record.upstream_id) == (JobStatus.CANCELLED, VIDEO)
    assert h.bus.one(JobCancelledV1).upstream_id == VIDEO


async def test_a_webhook_for_a_cancelling_job_ends_it_without_looking_upstream() -> None:
    provider = FakeProvider()
    async with running(build_poller(), lambda f: PollerDeps(f.jobs, f.emit, provider, POLICY)) as h:
        job_id = new_job_id()
        h.jobs.put(asked_to_cancel(submitted_record(job_id)))
        h.upstream.links[VIDEO] = (TENANT, job_id)
        seen = InMemorySeenWebhooks()
        api = build_webhooks(WebhookDeps(h.deps, h.upstream, seen, Webhook(SECRET)))
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
            body = event_body(VIDEO)
            answer = await client.post(PATH, content=body, headers=signed(body))

    assert answer.status_code == 202
    assert answer.json()["accepted"] == "not_followed"
    assert provider.retrieved == []
    record = h.jobs.records()[job_id]
    assert (record.status, record.stage) == (JobStatus.CANCELLED, "poller")
    assert h.bus.one(JobCancelledV1).upstream_id == VIDEO

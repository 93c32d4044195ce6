"""The poller's webhook endpoint over ASGI, on the poller's router under TestNatsBroker with
fakes: a valid webhook moves the job as a poll would (one upstream retrieve, the same facts),
replays and forgeries change nothing, an unknown video is accepted and ignored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from services.poller.app import build_router
from services.poller.domain import PollPolicy
from services.poller.ports import Deps, WebhookDeps
from services.poller.webhooks import PATH, build_webhooks
from shared.contracts import Event, JobGeneratedV1, JobProgressV1, JobStatus, JobSubmittedV1
from shared.contracts.ids import fact_event_id
from shared.provider import ProviderRateLimited, ProviderUnavailable
from tests.component.harness import TENANT, Harness, job_record, new_job_id, running
from tests.component.support import actions
from tests.component.test_poller import submitted
from tests.fakes import (
    FakeProvider,
    FixedExpectations,
    InMemoryJobStore,
    InMemorySeenWebhooks,
    InMemoryUpstreamIndex,
    upstream_video,
)
from tests.webhook_signing import OTHER_SECRET, SECRET, event_body, signed

POLICY = PollPolicy(default_delay=60.0, min_delay=60.0, max_delay=60.0, deadline=3 * 3600.0)
VIDEO = "video_abc"


@dataclass
class Endpoint:
    h: Harness
    provider: FakeProvider
    seen: InMemorySeenWebhooks
    client: httpx.AsyncClient

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.client.post(PATH, content=body, headers=headers)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    provider, seen = FakeProvider(), InMemorySeenWebhooks()
    # Jobs are expected done in 10 minutes: the poll path does not look before then, unless a
    # webhook told of the job's video early.
    deps = lambda f: Deps(  # noqa: E731
        f.jobs, f.emit, provider, POLICY, FixedExpectations(600.0), early=seen
    )
    async with running(build_router(), deps) as h:
        api = build_webhooks(WebhookDeps(h.deps, h.upstream, seen, Webhook(SECRET)))
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
            yield Endpoint(h, provider, seen, client)


def generating_job(e: Endpoint, video: str = VIDEO) -> JobSubmittedV1:
    """A job the poller follows (generating at 40 %), linked to `video` in the index."""
    job_id = new_job_id()
    record = job_record(
        job_id, JobStatus.GENERATING, upstream_id=video, cost_micros=400_000, progress=40
    )
    e.h.jobs.put(record)
    e.h.upstream.links[video] = (TENANT, job_id)
    return submitted(job_id)


async def test_a_valid_webhook_moves_a_generating_job_to_generated(endpoint: Endpoint) -> None:
    event = generating_job(endpoint)
    endpoint.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    body = event_body(VIDEO)

    response = await endpoint.post(body, signed(body))

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": "looked", "job_id": event.job_id, "running": False}
    assert endpoint.provider.retrieved == [VIDEO]  # one retrieve: the upstream decides
    generated = endpoint.h.bus.one(JobGeneratedV1)
    assert generated.event_id == fact_event_id(event.job_id, "generated")  # the poll's fact
    assert (generated.upstream_id, generated.cost_micros) == (VIDEO, 400_000)
    assert endpoint.h.jobs.records()[event.job_id].status == JobStatus.GENERATED

    # The job's pending poll (its delayed nak) comes due: it finds the job past polling and
    # stops, with no retrieve, announcing the same fact again (JetStream keeps one).
    await endpoint.h.send(event, delivery=2)
    assert endpoint.provider.retrieved == [VIDEO]
    assert actions(endpoint.h.outcomes(event)) == ["ack"]
    assert {g.event_id for g in endpoint.h.bus.events(JobGeneratedV1)} == {generated.event_id}


async def test_the_payload_is_not_trusted_the_upstream_status_decides(endpoint: Endpoint) -> None:
    event = generating_job(endpoint)
    endpoint.provider.retrieves.append((upstream_video(VIDEO, "in_progress", progress=70), 1.0))
    body = event_body(VIDEO, "video.completed")

    response = await endpoint.post(body, signed(body))

    assert response.status_code == 202
    assert response.json()["running"] is True
    assert endpoint.h.bus.events(JobGeneratedV1) == []
    assert endpoint.h.bus.one(JobProgressV1).progress == 70
    assert endpoint.h.jobs.records()[event.job_id].status == JobStatus.GENERATING


async def test_a_replayed_webhook_id_is_refused(endpoint: Endpoint) -> None:
    generating_job(endpoint)
    endpoint.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    body = event_body(VIDEO)
    headers = signed(body, webhook_id="msg_once")

    first = await endpoint.post(body, headers)
    again = await endpoint.post(body, headers)

    assert first.status_code == 202
    assert again.status_code == 409
    assert again.json()["error"]["reason"] == "replayed"
    assert endpoint.provider.retrieved == [VIDEO]


async def test_the_retry_of_a_webhook_whose_taker_died_announces_what_it_recorded(
    endpoint: Endpoint,
) -> None:
    """The taker recorded `generated` and died before announcing it and before marking the
    webhook done: its claim holds until stale, but the sender's retry meanwhile announces the
    recorded fact (not the job's safety poll, a minute later)."""
    job_id = new_job_id()
    endpoint.h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO))
    endpoint.h.upstream.links[VIDEO] = (TENANT, job_id)
    assert await endpoint.seen.claim("msg_dead")  # the dead taker's claim
    body = event_body(VIDEO)

    retry = await endpoint.post(body, signed(body, webhook_id="msg_dead"))

    assert retry.status_code == 409
    assert endpoint.provider.retrieved == []
    generated = endpoint.h.bus.one(JobGeneratedV1)
    assert generated.event_id == fact_event_id(job_id, "generated")


async def test_an_unknown_video_is_accepted_and_ignored(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    body = event_body("video_not_ours")
    with caplog.at_level(logging.INFO, logger="clipline.poller.webhooks"):
        response = await endpoint.post(body, signed(body))

    assert response.status_code == 202
    assert response.json()["accepted"] == "ignored"
    assert endpoint.provider.retrieved == []
    assert endpoint.h.bus.published == []
    assert "video_not_ours" in caplog.text


async def test_a_video_told_of_before_its_job_was_followed_is_looked_at_on_its_first_poll(
    endpoint: Endpoint,
) -> None:
    """A lost create's video completes (its webhook finds no job), then the job adopts it: its
    first poll looks at once instead of waiting for the expected completion."""
    body = event_body("video_adopted")
    assert (await endpoint.post(body, signed(body))).json()["accepted"] == "ignored"
    job_id = new_job_id()
    endpoint.h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id="video_adopted"))
    endpoint.h.upstream.links["video_adopted"] = (TENANT, job_id)
    endpoint.provider.retrieves.append((upstream_video("video_adopted", "completed"), None))

    await endpoint.h.send(submitted(job_id).model_copy(update={"upstream_id": "video_adopted"}))

    assert endpoint.provider.retrieved == ["video_adopted"]
    assert endpoint.h.bus.one(JobGeneratedV1).job_id == job_id


async def test_a_webhook_between_the_link_and_submitted_is_remembered(endpoint: Endpoint) -> None:
    job_id = new_job_id()
    endpoint.h.jobs.put(job_record(job_id, JobStatus.SUBMITTING))
    endpoint.h.upstream.links[VIDEO] = (TENANT, job_id)
    body = event_body(VIDEO)

    response = await endpoint.post(body, signed(body))

    assert response.json() == {"accepted": "not_followed", "job_id": job_id, "status": "submitting"}
    assert endpoint.seen.told_videos == {VIDEO}


async def test_a_job_the_poll_waits_for_is_not_looked_at_without_a_webhook(
    endpoint: Endpoint,
) -> None:
    job_id = new_job_id()
    endpoint.h.jobs.put(job_record(job_id, JobStatus.SUBMITTED, upstream_id=VIDEO))
    event = submitted(job_id)

    await endpoint.h.send(event)

    assert endpoint.provider.retrieved == []
    assert actions(endpoint.h.outcomes(event)) == ["nak"]


async def test_a_job_not_followed_is_left_alone(endpoint: Endpoint) -> None:
    job_id = new_job_id()
    endpoint.h.jobs.put(job_record(job_id, JobStatus.GENERATED, upstream_id=VIDEO))
    endpoint.h.upstream.links[VIDEO] = (TENANT, job_id)
    body = event_body(VIDEO)

    response = await endpoint.post(body, signed(body))

    assert response.status_code == 202
    assert response.json() == {"accepted": "not_followed", "job_id": job_id, "status": "generated"}
    assert endpoint.provider.retrieved == []
    assert endpoint.seen.told_videos == set()  # past polling: nothing to remember
    # Recorded `generated` (perhaps by a replica that died before announcing it): the webhook
    # announces the fact again, under its one id, instead of leaving it to the safety poll.
    generated = endpoint.h.bus.one(JobGeneratedV1)
    assert generated.event_id == fact_event_id(job_id, "generated")


async def test_a_job_past_generated_is_not_announced_again(endpoint: Endpoint) -> None:
    job_id = new_job_id()
    endpoint.h.jobs.put(job_record(job_id, JobStatus.STORING, upstream_id=VIDEO))
    endpoint.h.upstream.links[VIDEO] = (TENANT, job_id)
    body = event_body(VIDEO)

    response = await endpoint.post(body, signed(body))

    assert response.json() == {"accepted": "not_followed", "job_id": job_id, "status": "storing"}
    assert endpoint.h.bus.events(JobGeneratedV1) == []


async def test_forged_and_stale_webhooks_change_nothing(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    event = generating_job(endpoint)
    body = event_body(VIDEO)
    forged = signed(body, secret=OTHER_SECRET)
    stale = signed(body, age=timedelta(minutes=10))
    with caplog.at_level(logging.DEBUG):
        refused = [await endpoint.post(body, forged), await endpoint.post(body, stale)]

    assert [(r.status_code, r.json()["error"]["reason"]) for r in refused] == [
        (401, "invalid_signature"),
        (401, "stale"),
    ]
    assert endpoint.provider.retrieved == []
    assert endpoint.h.jobs.records()[event.job_id].status == JobStatus.GENERATING
    assert endpoint.seen.ids == set()  # a refused webhook takes no id
    for secret_or_signature in (SECRET, forged["webhook-signature"], stale["webhook-signature"]):
        assert secret_or_signature not in caplog.text
        assert all(secret_or_signature not in r.text for r in refused)


@pytest.mark.parametrize(
    ("failure", "retry_after"),
    [
        (ProviderUnavailable("upstream 502"), None),
        (ProviderRateLimited("slow down", retry_after_seconds=7.0), "60"),
    ],
)
async def test_a_failed_look_answers_503_and_the_retry_is_taken(
    endpoint: Endpoint, failure: Exception, retry_after: str | None
) -> None:
    event = generating_job(endpoint)
    endpoint.provider.retrieves += [
        failure,
        (upstream_video(VIDEO, "completed", progress=100), None),
    ]
    body = event_body(VIDEO)
    headers = signed(body, webhook_id="msg_retried")

    first = await endpoint.post(body, headers)
    assert first.status_code == 503
    assert first.json()["error"]["reason"] == "retry"
    assert first.headers.get("retry-after") == retry_after
    assert endpoint.seen.released == ["msg_retried"]

    retried = await endpoint.post(body, headers)  # the sender's retry: same id, taken now
    assert retried.status_code == 202
    assert endpoint.h.jobs.records()[event.job_id].status == JobStatus.GENERATED


async def test_without_a_secret_the_endpoint_is_disabled() -> None:
    transport = httpx.ASGITransport(app=build_webhooks(None))
    async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
        body = event_body(VIDEO)
        response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 503
    assert response.json()["error"]["reason"] == "webhooks_disabled"


async def test_other_paths_and_methods_get_the_error_envelope(endpoint: Endpoint) -> None:
    wrong_path = await endpoint.client.post("/webhooks/other", content=b"{}")
    wrong_method = await endpoint.client.get(PATH)
    assert wrong_path.status_code == 404
    assert wrong_path.json()["error"]["reason"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["reason"] == "method_not_allowed"


async def test_an_oversize_body_is_refused(endpoint: Endpoint) -> None:
    body = b"x" * (10 * 1024 * 1024)
    response = await endpoint.post(body, signed(b"{}"))
    assert response.status_code == 413
    assert response.json()["error"]["reason"] == "too_large"


class UnreachableSeen(InMemorySeenWebhooks):
    async def claim(self, webhook_id: str) -> bool:
        raise ConnectionError("nats: no servers available")


async def test_when_ids_cannot_be_recorded_the_sender_is_asked_to_retry() -> None:
    hooks = WebhookDeps(
        Deps(InMemoryJobStore(), NoEmit(), FakeProvider(), POLICY),
        InMemoryUpstreamIndex(), UnreachableSeen(), Webhook(SECRET),
    )  # fmt: skip
    transport = httpx.ASGITransport(app=build_webhooks(hooks))
    async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
        body = event_body(VIDEO)
        response = await client.post(PATH, content=body, headers=signed(body))
    assert response.status_code == 503
    assert response.json()["error"]["reason"] == "retry"


class NoEmit:
    async def __call__(self, event: Event) -> None:
        raise AssertionError(f"nothing may be emitted: {event}")


async def test_a_webhook_racing_the_jobs_poll_gives_one_outcome(endpoint: Endpoint) -> None:
    event = generating_job(endpoint)
    done = (upstream_video(VIDEO, "completed", progress=100), None)
    endpoint.provider.retrieves += [done, done]
    body = event_body(VIDEO)

    response, _ = await asyncio.gather(
        endpoint.post(body, signed(body)), endpoint.h.send(event, delivery=2)
    )

    assert response.status_code == 202
    assert endpoint.h.jobs.records()[event.job_id].status == JobStatus.GENERATED
    # However they interleave: one fact (one event id, which JetStream keeps once), one step.
    ids = {g.event_id for g in endpoint.h.bus.events(JobGeneratedV1)}
    assert ids == {fact_event_id(event.job_id, "generated")}
    assert endpoint.h.jobs.writes == [event.job_id]  # the second mark_generated was refused
    assert actions(endpoint.h.outcomes(event)) == ["ack"]

"""The poller's webhooks observed (issue 20): each counted by outcome, a bad signature
included; a verified one's look is a span in its job's trace, and the job it moved on is no
longer counted as waiting."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from standardwebhooks import Webhook

from services.poller.app import build_router
from services.poller.domain import PollPolicy
from services.poller.observe import PollerObserver
from services.poller.ports import Deps, WebhookDeps
from services.poller.webhooks import PATH, build_webhooks
from shared.contracts import JobStatus
from tests.component.harness import TENANT, Harness, job_record, new_job_id, running
from tests.fakes import FakeProvider, FixedExpectations, InMemorySeenWebhooks, upstream_video
from tests.otel_probe import metric_reader, reading, span_exporter, spans_named
from tests.webhook_signing import OTHER_SECRET, SECRET, event_body, signed

POLICY = PollPolicy(default_delay=60.0, min_delay=60.0, max_delay=60.0, deadline=3 * 3600.0)
VIDEO = "video_abc"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(autouse=True)
def _metrics() -> None:
    metric_reader()


@dataclass
class Endpoint:
    h: Harness
    provider: FakeProvider
    observer: PollerObserver
    client: httpx.AsyncClient

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        return (await self.client.post(PATH, content=body, headers=headers)).status_code

    def count(self, outcome: str) -> float:
        labels = {"provider": self.observer.provider, "outcome": outcome}
        return reading("clipline.poller.webhooks", labels)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    provider, seen = FakeProvider(), InMemorySeenWebhooks()
    observer = PollerObserver(f"p{uuid.uuid4().hex[:8]}")
    deps = lambda f: Deps(  # noqa: E731
        f.jobs, f.emit, provider, POLICY, FixedExpectations(600.0), early=seen, observer=observer
    )
    async with running(build_router(), deps) as h:
        api = build_webhooks(WebhookDeps(h.deps, h.upstream, seen, Webhook(SECRET)))
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://poller") as client:
            yield Endpoint(h, provider, observer, client)


def generating_job(e: Endpoint) -> str:
    job_id = new_job_id()
    record = job_record(
        job_id, JobStatus.GENERATING, upstream_id=VIDEO, cost_micros=400_000, progress=40
    )
    e.h.jobs.put(record.model_copy(update={"trace_id": TRACE}))
    e.h.upstream.links[VIDEO] = (TENANT, job_id)
    e.observer.following((TENANT, job_id), running_for=10.0, expected=600.0)
    return job_id


async def test_each_webhook_is_counted_by_outcome(endpoint: Endpoint) -> None:
    generating_job(endpoint)
    body = event_body(VIDEO)
    endpoint.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    good = signed(body)

    assert await endpoint.post(body, signed(body, secret=OTHER_SECRET)) == 401
    assert await endpoint.post(body, signed(body, age=timedelta(minutes=10))) == 401
    assert await endpoint.post(b"{}", signed(b"{}")) == 400
    assert await endpoint.post(body, good) == 202
    assert await endpoint.post(body, good) == 409
    unknown = event_body("video_nobody")
    assert await endpoint.post(unknown, signed(unknown)) == 202

    assert endpoint.count("bad_signature") == 1
    assert endpoint.count("stale") == 1
    assert endpoint.count("bad_request") == 1
    assert endpoint.count("looked") == 1
    assert endpoint.count("duplicate") == 1
    assert endpoint.count("unknown_job") == 1


async def test_a_webhooks_look_is_a_span_in_its_jobs_trace_and_ends_its_wait(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = span_exporter(monkeypatch)
    job_id = generating_job(endpoint)
    assert endpoint.observer.counts() == (1, 0)
    endpoint.provider.retrieves.append((upstream_video(VIDEO, "completed", progress=100), None))
    body = event_body(VIDEO)

    assert await endpoint.post(body, signed(body)) == 202

    (hook,) = spans_named(spans, "poller webhook")
    assert format(hook.context.trace_id, "032x") == TRACE
    assert hook.attributes is not None
    assert hook.attributes["clipline.job.id"] == job_id
    looks = [s for s in spans.get_finished_spans() if s.name != "poller webhook"]
    assert all(format(s.context.trace_id, "032x") == TRACE for s in looks)
    assert endpoint.observer.counts() == (0, 0)  # generated: no longer waiting here

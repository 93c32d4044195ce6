"""Intake's part of the job metrics and traces: a new job counted once as it enters
`accepted` (the same request again is no move), a request refused at the edge counted as a
`rejected` transition with its reason; an HTTP create is a SERVER span starting the job's
trace (its id on the record), linked to the caller's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.intake import spans
from shared.contracts.ids import job_id_for
from tests.component.test_intake_http import ACME, BODY, Api, serving
from tests.fakes import InMemoryJobStore
from tests.metered import total

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with serving(InMemoryJobStore()) as a:
        yield a


def moves(**labels: str) -> float:
    return total("clipline.job.transitions", tenant="acme", **labels)


async def test_a_new_job_enters_accepted_once(api: Api) -> None:
    before = moves(from_state="", to_state="accepted", model="sora-2", kind="generate")
    await api.post(key="obs-1", **ACME)
    await api.post(key="obs-1", **ACME)  # the same request again: the same job, no move
    assert moves(from_state="", to_state="accepted", model="sora-2", kind="generate") - before == 1


async def test_a_request_refused_at_the_edge_is_a_rejected_transition(api: Api) -> None:
    first = await api.post({**BODY, "seconds": 3}, key="obs-2", **ACME)
    assert first.status_code == 422
    labels = {"to_state": "rejected", "from_state": "", "reason": first.json()["reason"]}
    before = moves(**labels, model="sora-2", kind="generate")
    again = await api.post({**BODY, "seconds": 3}, key="obs-2b", **ACME)
    assert again.status_code == 422
    assert moves(**labels, model="sora-2", kind="generate") - before == 1

    conflict_before = moves(to_state="rejected", reason="idempotency_conflict")
    await api.post(key="obs-3", **ACME)
    conflict = await api.post({**BODY, "prompt": "another"}, key="obs-3", **ACME)
    assert conflict.status_code == 409
    assert moves(to_state="rejected", reason="idempotency_conflict") - conflict_before == 1


async def test_an_http_create_is_a_server_span_that_links_the_callers_trace(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(spans, "_TRACER", tracing.get_tracer("test"))
    parent = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
    answer = await api.post(key="obs-4", traceparent=parent, **ACME)
    assert answer.status_code == 202

    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /v1/jobs"
    assert span.kind == trace.SpanKind.SERVER
    assert format(span.context.trace_id, "032x") != CALLER_TRACE  # a trace of its own
    assert span.parent is None
    (link,) = span.links
    assert format(link.context.trace_id, "032x") == CALLER_TRACE  # the caller's, linked
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/v1/jobs"
    assert attributes["clipline.job.id"] == job_id_for("acme", "obs-4")
    assert attributes["clipline.tenant"] == "acme"
    moved = [e for e in span.events if e.name == "clipline.transition"]
    assert [(e.attributes or {}).get("clipline.to_state") for e in moved] == ["accepted"]
    record = await api.jobs.get("acme", job_id_for("acme", "obs-4"))
    assert record is not None
    assert record.trace_id == format(span.context.trace_id, "032x")

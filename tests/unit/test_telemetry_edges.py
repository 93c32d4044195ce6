"""The short spans' helpers (shared/telemetry.py): nothing built where nothing records, an
error's class (never its message) on the span, and a URL kept without query or user info."""

from __future__ import annotations

from typing import NamedTuple

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from shared import telemetry
from tests.otel_probe import span_exporter


def test_without_a_recording_provider_no_span_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider(sampler=ALWAYS_OFF))
    assert not telemetry.recording()
    with telemetry.short_span("t", "clipline.poll", {"a": "b"}) as span:
        assert span is trace.INVALID_SPAN


def test_a_failing_block_ends_its_span_with_the_error_class_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = span_exporter(monkeypatch)
    with (
        pytest.raises(ValueError, match="secret"),
        telemetry.short_span("t", "GET /v1/videos/{video_id}"),
    ):
        raise ValueError("http://host/x?token=secret")
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "ValueError"
    assert span.status.status_code is StatusCode.ERROR
    assert "secret" not in str(span.attributes)
    assert "secret" not in (span.status.description or "")
    assert not span.events  # no exception event: its message may quote a URL


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (
            "http://s3:9000/b/k.mp4?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc",
            "http://s3:9000/b/k.mp4",
        ),
        ("https://user:pw@hooks.example.com/cb?token=t#frag", "https://hooks.example.com/cb"),
        ("http://127.0.0.1:8080/v1/videos", "http://127.0.0.1:8080/v1/videos"),
    ],
)
def test_a_url_is_kept_without_query_fragment_or_user_info(url: str, kept: str) -> None:
    assert telemetry.scrubbed_url(url) == kept


class RequestInfo(NamedTuple):
    url: httpx.URL


def test_the_httpx_hook_replaces_the_full_url(monkeypatch: pytest.MonkeyPatch) -> None:
    spans = span_exporter(monkeypatch)
    with trace.get_tracer("t").start_as_current_span("GET") as span:
        span.set_attribute("url.full", "http://s3/b/k?X-Amz-Signature=abc")
        telemetry.scrub_httpx_span(
            span, RequestInfo(httpx.URL("http://s3/b/k?X-Amz-Signature=abc"))
        )
    (done,) = spans.get_finished_spans()
    assert done.attributes is not None
    assert done.attributes["url.full"] == "http://s3/b/k"


def test_a_webhooks_span_hangs_under_its_deliverys_span_when_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = span_exporter(monkeypatch)
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with telemetry.in_job_trace(trace_id, "hook", parent=f"00-{trace_id}-{parent}-01"):
        pass
    with telemetry.in_job_trace(trace_id, "other", parent=f"00-{'1' * 32}-{parent}-01"):
        pass  # another trace's span: not a parent of this job's
    hook, other = spans.get_finished_spans()
    assert hook.parent is not None
    assert format(hook.parent.span_id, "016x") == parent
    assert format(hook.context.trace_id, "032x") == trace_id
    assert other.parent is not None
    assert format(other.parent.span_id, "016x") != parent
    assert format(other.context.trace_id, "032x") == trace_id

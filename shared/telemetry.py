"""OpenTelemetry set-up: one TracerProvider per process, OTLP export when configured."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

log = logging.getLogger("clipline.telemetry")


def make_tracer_provider(service_name: str) -> TracerProvider:
    """A provider tagged with `service.name`; exports over OTLP/HTTP when
    OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set. Otherwise it records nothing
    and samples nothing: its spans still carry trace ids (a job keeps one trace id, which
    events carry on), but none is built up (attributes, events, timings) only to be dropped:
    about 45 us of CPU per span (bench/consume.py)."""
    resource = Resource.create({"service.name": service_name})
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing: OTLP export enabled for %s", service_name)
        return provider
    return TracerProvider(resource=resource, sampler=ALWAYS_OFF)


def records(provider: TracerProvider) -> bool:
    """Does `provider` record spans (an OTLP exporter is configured)? When it does not, the
    per-message paths skip their spans and only carry the trace on (`carried`)."""
    return provider.sampler is not ALWAYS_OFF


@contextmanager
def carried(headers: Mapping[str, str] | None) -> Iterator[trace.Span]:
    """Where nothing is recorded: the trace a message's `traceparent` names becomes the
    current context for the block (so what it emits carries the same trace on), with no span
    built (about 20 us a message less than a dropped span, bench/consume.py). Yields the
    invalid span, whose methods do nothing."""
    parent = remote_parent(headers) if headers else None
    token = otel_context.attach(parent) if parent is not None else None
    try:
        yield trace.INVALID_SPAN
    finally:
        if token is not None:
            otel_context.detach(token)


def remote_parent(headers: Mapping[str, str]) -> otel_context.Context | None:
    """The context of a W3C `traceparent` (version 00) read by hand: the propagator's regex
    costs more than the message's handling in a small step. Any other form goes through the
    configured propagator; an invalid one is no parent."""
    value = headers.get("traceparent")
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return propagate.extract(headers)
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id or len(parts[3]) != 2:
        return None
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def install(provider: TracerProvider) -> None:
    """Make `provider` the global one. Only a process entry point (__main__) calls this."""
    trace.set_tracer_provider(provider)


def current_trace_id() -> str | None:
    """The active trace id as 32 hex chars, or None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x")


@contextmanager
def in_job_trace(
    trace_id: str | None,
    name: str,
    attributes: Mapping[str, str] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: str | None = None,
) -> Iterator[None]:
    """A span in a job's trace (its id is kept on the job record) for work on the job that no
    message of it started, such as a webhook: so one job stays one trace, and the events
    emitted inside carry it on. Its parent is `parent` (a W3C traceparent) when that names a
    span of the same trace (e.g. the job's delivery held by this process); otherwise not known
    (only the trace id is kept), so the span hangs under a placeholder parent of that trace."""
    context = None
    known = remote_parent({"traceparent": parent}) if parent else None
    if known is not None:
        known_trace = trace.get_current_span(known).get_span_context().trace_id
        if format(known_trace, "032x") == trace_id:
            context = known  # a span of the job's trace (a delivery's): a real parent
    try:
        trace_number = int(trace_id or "", 16) if len(trace_id or "") == 32 else 0
    except ValueError:
        trace_number = 0
    if trace_number and context is None:
        placeholder = SpanContext(
            trace_id=trace_number,
            span_id=secrets.randbits(64) or 1,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        context = trace.set_span_in_context(NonRecordingSpan(placeholder))
    with trace.get_tracer("clipline").start_as_current_span(
        name, context=context, kind=kind, attributes=attributes
    ):
        yield


def recording() -> bool:
    """Does this process's (global) tracer provider record spans? Without an exporter the
    short spans (upstream calls, polls, S3 transfers) are not built at all (`client_span`)."""
    provider = trace.get_tracer_provider()
    return isinstance(provider, TracerProvider) and records(provider)


@contextmanager
def short_span(
    tracer: str,
    name: str,
    attributes: Mapping[str, str | int] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[trace.Span]:
    """A short span (one upstream call, one poll, one S3 transfer) under the current
    context, from the global provider's tracer named `tracer`; or, where nothing records
    spans, none (the invalid span, whose methods do nothing): the trace is still carried on
    by the current context. An exception ends it with `error.type` (the exception's class
    name, never its message: that may quote a URL) and ERROR status."""
    if not recording():
        yield trace.INVALID_SPAN
        return
    with trace.get_tracer(tracer).start_as_current_span(
        name, kind=kind, attributes=attributes,
        record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        try:
            yield span
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


def scrubbed_url(url: str) -> str:
    """`url` without its query, fragment or user info: what a span may keep of it (a presigned
    URL's query is a credential; a caller's URL may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


URL_ATTRIBUTES = ("url.full", "http.url")


def scrub_httpx_span(span: trace.Span, request: object) -> None:
    """httpx instrumentation's request hook: the span keeps the URL without its query (the
    instrumentation redacts AWS v2 signatures, not SigV4's X-Amz-*, nor a caller's tokens)."""
    if not span.is_recording():
        return
    url = getattr(request, "url", None)
    if url is not None:
        for name in URL_ATTRIBUTES:
            span.set_attribute(name, scrubbed_url(str(url)))


async def scrub_httpx_span_async(span: trace.Span, request: object) -> None:
    scrub_httpx_span(span, request)

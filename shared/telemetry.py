"""OpenTelemetry set-up: one TracerProvider per process, OTLP export when configured."""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger("clipline.telemetry")


def make_tracer_provider(service_name: str) -> TracerProvider:
    """A provider tagged with `service.name`; exports over OTLP/HTTP when
    OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set, otherwise records nothing."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing: OTLP export enabled for %s", service_name)
    return provider


def install(provider: TracerProvider) -> None:
    """Make `provider` the global one. Only a process entry point (__main__) calls this."""
    trace.set_tracer_provider(provider)


def current_trace_id() -> str | None:
    """The active trace id as 32 hex chars, or None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x")

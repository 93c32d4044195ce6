"""In-memory OpenTelemetry readers for tests: the metrics and the spans this process records.

A process has one global meter provider and one global tracer provider, each set once: the
first test to ask installs an SDK provider with an in-memory reader (metrics) or exporter
(spans), and every later one reads the same. Counters and histograms are cumulative, so a test
reads a value before and after what it does and checks the difference."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import records

_readers: list[InMemoryMetricReader] = []
_exporters: list[InMemorySpanExporter] = []


def metric_reader() -> InMemoryMetricReader:
    """The process's in-memory metric reader (installed with the global provider on first use);
    the test is skipped when another kind of provider was installed first."""
    if _readers:
        return _readers[0]
    if isinstance(metrics.get_meter_provider(), MeterProvider):
        pytest.skip("another meter provider is installed in this process")
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    _readers.append(reader)
    return reader


def reading(name: str, labels: Mapping[str, str] | None = None) -> float:
    """The current value of metric `name` summed over the points whose labels include
    `labels`: a counter's total, a gauge's value, a histogram's count of observations."""
    data = metric_reader().get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if any(attributes.get(k) != v for k, v in (labels or {}).items()):
                        continue
                    if isinstance(metric.data, Histogram):
                        total += point.count  # type: ignore[union-attr]
                    elif isinstance(metric.data, Sum | Gauge):
                        total += point.value  # type: ignore[union-attr]
    return total


def histogram_sum(name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of a histogram's observations whose labels include `labels`."""
    data = metric_reader().get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name or not isinstance(metric.data, Histogram):
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if all(attributes.get(k) == v for k, v in (labels or {}).items()):
                        total += point.sum
    return total


def span_exporter() -> InMemorySpanExporter:
    """The process's in-memory span exporter, cleared (installed with a recording global
    tracer provider on first use); skipped when a provider that records nothing came first."""
    if not _exporters:
        provider = trace.get_tracer_provider()
        exporter = InMemorySpanExporter()
        if isinstance(provider, TracerProvider):
            if not records(provider):
                pytest.skip("a tracer provider that records nothing is installed")
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
        _exporters.append(exporter)
    _exporters[0].clear()
    return _exporters[0]


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]

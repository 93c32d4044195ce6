"""In-memory OpenTelemetry readers for tests: the metrics and the spans this process records.

A process has one global meter provider, set once: the first test to ask installs an SDK
provider with an in-memory reader, and every later one reads the same. Counters and histograms
are cumulative, so a test reads a value before and after what it does (or uses labels of its
own) and checks the difference. Spans: a recording provider of the test's own
(`span_exporter`)."""

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

_readers: list[InMemoryMetricReader] = []


def metric_reader() -> InMemoryMetricReader:
    """The process's in-memory metric reader (installed with the global provider on first use);
    the test is skipped when another kind of provider was installed first."""
    if _readers:
        return _readers[0]
    installed = metrics.get_meter_provider()
    if isinstance(installed, MeterProvider):  # another helper's: read it if it keeps one
        found = [
            reader
            for reader in getattr(installed, "_sdk_config").metric_readers  # noqa: B009
            if isinstance(reader, InMemoryMetricReader)
        ]
        if not found:
            pytest.skip("another meter provider, without an in-memory reader, is installed")
        _readers.append(found[0])
        return found[0]
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


def span_exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """An in-memory exporter of the spans this test makes: a recording tracer provider is the
    global one for the test only (`monkeypatch` puts back what was there, usually none, so
    the tests after it see the process as it was)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    return exporter


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]

"""An in-memory MeterProvider for tests of what the services record (shared/metrics.py).

OpenTelemetry's global meter provider can be set once per process: the first test that asks
installs one whose reader is kept here. Counters are cumulative over the process: a test reads
a total before and after what it checks (or labels of its own, such as a fresh tenant)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.otel_probe import metric_reader

_installed: list[InMemoryMetricReader] = []


def reader() -> InMemoryMetricReader:
    """The process's test reader: tests.otel_probe's, which installs the global provider on
    first use (one reader for every test module, whichever asks first)."""
    if not _installed:
        _installed.append(metric_reader())
    return _installed[0]


def points(name: str) -> Iterator[Any]:
    data = reader().get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    yield from metric.data.data_points


def matching(name: str, labels: Mapping[str, str]) -> list[Any]:
    return [p for p in points(name) if all(p.attributes.get(k) == v for k, v in labels.items())]


def total(name: str, **labels: str) -> float:
    """A counter's sum (a histogram's count) over the points whose labels include `labels`."""
    found = 0.0
    for point in matching(name, labels):
        found += point.count if hasattr(point, "bucket_counts") else point.value
    return found


def gauge(name: str, **labels: str) -> float | None:
    """A gauge's last value for exactly one label set including `labels` (None: never set)."""
    found = matching(name, labels)
    if len(found) > 1:
        raise AssertionError(f"{name}{labels}: {len(found)} series")
    return found[0].value if found else None


reader()  # at import: what a test records before its first reading counts too

"""Intake's HTTP server spans: where a job's trace begins when it is submitted over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

_TRACER = trace.get_tracer("clipline.intake")


@contextmanager
def server_span(request: Request, method: str, route: str | None = None) -> Iterator[trace.Span]:
    """A SERVER span (HTTP semantic conventions) around taking a job, named by its route's
    template (low cardinality: never a concrete path), in the caller's trace when its
    `traceparent` names one: the job's record keeps this trace's id, and its events carry it
    on to every service. Built even where nothing records (its trace id is the job's)."""
    route = route or getattr(request.scope.get("route"), "path", None) or "unmatched"
    parent = propagate.extract(request.headers) if "traceparent" in request.headers else None
    with _TRACER.start_as_current_span(
        f"{method} {route}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route, "url.scheme": "http"},
    ) as span:
        yield span

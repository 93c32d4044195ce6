"""Intake's HTTP server spans: where a job's trace begins when it is submitted over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind

_TRACER = trace.get_tracer("clipline.intake")


@contextmanager
def server_span(request: Request, method: str, route: str | None = None) -> Iterator[trace.Span]:
    """A SERVER span (HTTP semantic conventions) around taking a job, named by its route's
    template (low cardinality: never a concrete path). It starts a trace of clipline's own,
    whose id the job's record keeps and its events carry on to every service; a caller's
    `traceparent` is linked, not continued (a public edge: a caller cannot put its jobs into
    another's trace). Built even where nothing records (its trace id is the job's)."""
    route = route or getattr(request.scope.get("route"), "path", None) or "unmatched"
    links = []
    if "traceparent" in request.headers:
        caller = trace.get_current_span(propagate.extract(request.headers)).get_span_context()
        if caller.is_valid:
            links.append(Link(caller))
    with _TRACER.start_as_current_span(
        f"{method} {route}",
        context=otel_context.Context(),  # a root: nothing of the caller's is the parent
        kind=SpanKind.SERVER,
        links=links,
        attributes={"http.request.method": method, "http.route": route, "url.scheme": "http"},
    ) as span:
        yield span

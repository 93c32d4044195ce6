"""Each upstream call observed: one short client span (HTTP semantic conventions) and its
metrics (clipline.upstream.requests and .request.duration), whatever HTTP client made it.

A span names the call by its endpoint's template (`GET /v1/videos/{video_id}`), never its URL:
no video id, query or credential is in a span's name or attributes, and the API key (a
header) never is. Labels are bounded: provider, endpoint, method, status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared import metrics
from shared.telemetry import short_span

_TRACER = "clipline.provider"

ENDPOINTS: dict[str, tuple[str, str]] = {
    "create": ("POST", "videos"),
    "list": ("GET", "videos"),
    "retrieve": ("GET", "videos/{video_id}"),
    "delete": ("DELETE", "videos/{video_id}"),
    "content": ("GET", "videos/{video_id}/content"),
    "remix": ("POST", "videos/{video_id}/remix"),
    "edit": ("POST", "videos/edits"),
    "extend": ("POST", "videos/extensions"),
}
"""The upstream's endpoints by their low-cardinality name: method and path template (relative
to the API's base URL)."""

DEFAULT_PROVIDER = "openai"


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the calls go, as spans and labels name it: the provider (the registry's name),
    the server's host and port, and the base URL's path (e.g. /v1)."""

    provider: str
    address: str
    port: int | None
    base_path: str

    @classmethod
    def of(cls, base_url: str, provider: str = DEFAULT_PROVIDER) -> Upstream:
        parts = urlsplit(base_url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None and parts.scheme in ("http", "https"):
            port = 443 if parts.scheme == "https" else 80
        return cls(provider, parts.hostname or "", port, parts.path.rstrip("/"))

    def template(self, endpoint: str) -> str:
        return f"{self.base_path}/{ENDPOINTS[endpoint][1]}"


@dataclass(slots=True)
class Call:
    """One call under way: its answer's status, once one came back."""

    span: trace.Span
    status: int | None = field(default=None)

    def answered(self, status: int) -> None:
        self.status = status
        self.span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(trace.StatusCode.ERROR, str(status))


@contextmanager
def observed(upstream: Upstream, endpoint: str) -> Iterator[Call]:
    """A call to `endpoint` (a name of ENDPOINTS): its client span around the block (the
    current span inside it, so `traceparent` sent names it) and, at its end, its count and
    duration by status ('error' when no answer came back)."""
    method, _ = ENDPOINTS[endpoint]
    template = upstream.template(endpoint)
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.template": template,
        "server.address": upstream.address,
        "clipline.upstream.endpoint": endpoint,
    }
    if upstream.port is not None:
        attributes["server.port"] = upstream.port
    began = time.perf_counter()
    call: Call | None = None
    try:
        with short_span(_TRACER, f"{method} {template}", attributes, kind=SpanKind.CLIENT) as span:
            call = Call(span)
            yield call
    finally:
        status = call.status if call is not None else None
        labels = {
            "provider": upstream.provider,
            "endpoint": endpoint,
            "method": method,
            "status": "error" if status is None else str(status),
        }
        metrics.UPSTREAM_REQUESTS.add(1, labels)
        metrics.UPSTREAM_DURATION.record(time.perf_counter() - began, labels)

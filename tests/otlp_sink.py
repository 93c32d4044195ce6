"""A minimal OTLP/HTTP trace receiver for tests: records (service.name, trace id, span name)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class SpanSeen:
    service: str
    trace_id: str
    name: str
    attributes: str = ""


@dataclass
class OtlpSink:
    spans: list[SpanSeen] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def services_in(self, trace_id: str) -> set[str]:
        with self.changed:
            return {s.service for s in self.spans if s.trace_id == trace_id}

    def wait_for_services(self, trace_id: str, services: set[str], timeout: float) -> set[str]:
        """Block until spans of all `services` arrived for `trace_id` (or timeout)."""
        with self.changed:
            self.changed.wait_for(lambda: services <= self._services(trace_id), timeout)
            return self._services(trace_id)

    def _services(self, trace_id: str) -> set[str]:
        return {s.service for s in self.spans if s.trace_id == trace_id}

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        seen: list[SpanSeen] = []
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attrs.get("service.name", "?")
            for scope in resource_spans.scope_spans:
                seen.extend(
                    SpanSeen(service, s.trace_id.hex(), s.name, str(s.attributes))
                    for s in scope.spans
                )
        with self.changed:
            self.spans.extend(seen)
            self.changed.notify_all()


def serve_otlp(add: Callable[[bytes], None]) -> ThreadingHTTPServer:
    """An OTLP/HTTP endpoint on a loopback port of its own, serving from a daemon thread: each
    body POSTed to /v1/traces goes to `add`; every POST is answered as a collector answers."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/v1/traces":
                add(body)
            payload = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_sink() -> tuple[OtlpSink, ThreadingHTTPServer]:
    sink = OtlpSink()
    return sink, serve_otlp(sink.add)

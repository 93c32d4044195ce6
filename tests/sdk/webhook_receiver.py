"""A loopback webhook receiver: records each POST's raw body and headers, answers 200."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from clipline.servers import LOOPBACK


@dataclass(frozen=True)
class Received:
    """One delivery exactly as it arrived: the SDK verifies the signature over these bytes."""

    body: bytes
    headers: dict[str, str]  # lower-cased names
    event_type: str | None
    video_id: str | None


class WebhookReceiver:
    """Runs an HTTP server on a free loopback port in a thread; tests wait per video id."""

    def __init__(self) -> None:
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/webhooks"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def wait_for(self, video_id: str, timeout: float = 15.0) -> Received:
        """The first delivery naming `video_id`; AssertionError if none arrives in time."""

        def find() -> Received | None:
            return next((r for r in self._received if r.video_id == video_id), None)

        with self._changed:
            found = self._changed.wait_for(find, timeout)
        if found is None:
            seen = [(r.event_type, r.video_id) for r in self.received()]
            raise AssertionError(f"no webhook for {video_id} within {timeout}s; got {seen}")
        return found

    def _record(self, body: bytes, headers: dict[str, str]) -> None:
        event_type, video_id = _event_of(body)
        with self._changed:
            self._received.append(Received(body, headers, event_type, video_id))
            self._changed.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver._record(body, headers)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output clean

        return Handler


def _event_of(body: bytes) -> tuple[str | None, str | None]:
    """Type and video id of an event body, or None for what cannot be read (still recorded)."""
    try:
        event = json.loads(body)
        data = event.get("data") or {}
        return event.get("type"), data.get("id")
    except (ValueError, AttributeError):
        return None, None

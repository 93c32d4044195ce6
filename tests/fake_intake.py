"""A small fake of intake's HTTP API for CLI tests: aiohttp on a free loopback port, in a thread
of its own, serving canned records, pages and Server-Sent Events (with a dropped connection,
a missing route or error answers when a test asks)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

API_KEY = "ck_0123456789abcdef_" + "k" * 43
JOB = "job_" + "c" * 32


def record(status: str = "completed", **changes: Any) -> dict[str, Any]:
    """A job record as intake answers it (JSON)."""
    base: dict[str, Any] = {
        "schema_version": 1, "job_id": JOB, "tenant": "acme", "status": status,
        "spec": {"model": "sora-2", "size": "720x1280", "seconds": 4, "prompt": "a harbour"},
        "idempotency_key": "k", "request_hash": "h", "trace_id": "t" * 32,
        "cost_micros": 400_000, "progress": 0, "assets": [],
        "history": {"accepted": "2026-12-07T12:00:00+00:00",
                    status: "2026-12-07T12:00:07+00:00"},
    }  # fmt: skip
    return base | changes


@dataclass
class Fake:
    """What the fake answers; tests change it, and read what it was asked."""

    records: list[dict[str, Any]] = field(default_factory=lambda: [record()])
    """GET /v1/jobs/{id} answers these in turn (the last one from then on)."""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    drop_after: int | None = None
    """The first event stream breaks (the connection aborted) after this event sequence."""
    end_after: int | None = None
    """The first event stream ends (cleanly, as after a terminal event) after this one."""
    events_route: bool = True
    submit_answer: tuple[int, Any, str] = (
        202, {"job_id": JOB, "tenant": "acme", "status": "accepted"}, "application/json"
    )  # fmt: skip
    pages: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[str, tuple[int, Any]] = field(default_factory=dict)
    """Route name -> (status, body) to answer instead."""
    asked: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    """The bodies of POST /v1/jobs, as sent."""
    """(method, path with query, headers) of every request."""
    streams: int = 0
    hold_open: bool = False
    """After its events, a stream stays open (live, heartbeats only) instead of ending."""
    job_id: str = JOB
    blobs: dict[str, bytes] = field(default_factory=dict)
    """Variant -> bytes behind the download links of GET /v1/jobs/{id}/assets."""
    """The one job this fake knows (any other is not found)."""
    timeline: dict[str, Any] | None = None
    """GET /v1/jobs/{id}/timeline answers it (None: the route is missing, an older intake)."""

    def reply(self, name: str) -> web.Response | None:
        if name not in self.fail:
            return None
        status, body = self.fail[name]
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        kind = "application/problem+json" if "title" in body else "application/json"
        return web.Response(status=status, text=json.dumps(body), content_type=kind)


def _app(fake: Fake) -> web.Application:
    reads = 0

    @web.middleware
    async def note(request: web.Request, handler: Callable[..., Any]) -> Any:
        fake.asked.append((request.method, request.path_qs, dict(request.headers)))
        if request.path.startswith("/blob/"):  # a presigned link: no API key there
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            body = {"error": {"reason": "unauthorized", "detail": "unknown API key"}}
            return web.json_response(body, status=401)
        return await handler(request)

    async def submit(request: web.Request) -> web.Response:
        fake.submitted.append(await request.json())
        if (answer := fake.reply("submit")) is not None:
            return answer
        status, body, kind = fake.submit_answer
        return web.Response(status=status, text=json.dumps(body), content_type=kind)

    async def show(request: web.Request) -> web.Response:
        nonlocal reads
        if (answer := fake.reply("show")) is not None:
            return answer
        if request.match_info["job_id"] != fake.job_id:
            body = {"error": {"reason": "not_found", "detail": "no such job"}}
            return web.json_response(body, status=404)
        now = fake.records[min(reads, len(fake.records) - 1)]
        reads += 1
        return web.json_response(now)

    async def listing(request: web.Request) -> web.Response:
        if (answer := fake.reply("list")) is not None:
            return answer
        cursor = request.query.get("cursor")
        index = int(cursor) if cursor else 0
        return web.json_response(fake.pages[index])

    async def events(request: web.Request) -> web.StreamResponse:
        if not fake.events_route:
            return web.json_response({"detail": "Not Found"}, status=404)
        if request.match_info["job_id"] != fake.job_id:
            body = {"type": "about:blank", "title": "not_found", "status": 404,
                    "detail": "no such job", "reason": "not_found"}  # fmt: skip
            return web.Response(status=404, text=json.dumps(body),
                                content_type="application/problem+json")  # fmt: skip
        fake.streams += 1
        first = fake.streams == 1
        after = int(request.headers.get("Last-Event-ID", "0"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        for seq, (kind, data) in enumerate(fake.events, start=1):
            if seq <= after:
                continue
            text = f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
            await response.write(text.encode())
            if first and fake.drop_after == seq:
                assert request.transport is not None
                request.transport.abort()  # a dropped connection, not a clean end
                return response
            if first and fake.end_after == seq:
                break
        while fake.hold_open:  # a live stream of a job that runs on: heartbeats only
            await response.write(b": keep-alive\n\n")
            await asyncio.sleep(0.2)
        await response.write_eof()
        return response

    async def cancel(_: web.Request) -> web.Response:
        if (answer := fake.reply("cancel")) is not None:
            return answer
        return web.json_response(record("cancelling"), status=202)

    async def assets(request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        links = [{"variant": v, "url": f"{base}/blob/{v}?X-Amz-Signature=s"} for v in fake.blobs]
        return web.json_response({"data": links})

    async def timeline(request: web.Request) -> web.Response:
        if fake.timeline is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        if request.match_info["job_id"] != fake.job_id:
            body = {"type": "about:blank", "title": "not_found", "status": 404,
                    "detail": "no such job", "reason": "not_found"}  # fmt: skip
            return web.Response(status=404, text=json.dumps(body),
                                content_type="application/problem+json")  # fmt: skip
        return web.json_response(fake.timeline)

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=fake.blobs[request.match_info["variant"]])

    app = web.Application(middlewares=[note])
    app.router.add_get("/v1/jobs/{job_id}/assets", assets)
    app.router.add_get("/blob/{variant}", blob)
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs", listing)
    app.router.add_get("/v1/jobs/{job_id}", show)
    app.router.add_get("/v1/jobs/{job_id}/events", events)
    app.router.add_get("/v1/jobs/{job_id}/timeline", timeline)
    app.router.add_post("/v1/jobs/{job_id}/cancel", cancel)
    return app


@contextmanager
def serving(fake: Fake) -> Iterator[str]:
    """Serve `fake` on a free loopback port for the block: its base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def start() -> None:
        runner = web.AppRunner(_app(fake), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        box["runner"] = runner
        box["port"] = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert started.wait(10), "the fake intake did not start"
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

"""Following a job: its Server-Sent Events (GET /v1/jobs/{id}/events, resumed with Last-Event-ID
after a dropped connection), or polling its record on a server without that route; and the
progress bar, moved by upstream progress or an estimate labelled as such."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from clipline.remote import REFUSED, UNREACHABLE, Api, CliError, refusal, unreachable
from shared.contracts import TERMINAL_KINDS

MAX_RECONNECTS = 5
"""Connections in a row that may drop before any message came: then the server is unreachable."""
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
TICK_SECONDS = 0.5
"""How often the bar is redrawn while no event comes (the estimate moves with the clock)."""
POLL_SECONDS = 1.0
LASTED_SECONDS = 30.0
"""A stream that lasted this long before it dropped worked: the drops in a row start again."""
READ_TIMEOUT_SECONDS = 120.0
AFTER_GENERATION = TERMINAL_KINDS | {"generated", "storing"}
"""Silence on an event stream (not even a heartbeat) for this long: reconnect."""


@dataclass(frozen=True, slots=True)
class Message:
    """One event of a job: `id` is the stream sequence (None when made from a polled record),
    `event` its kind, `data` the event's JSON."""

    id: str | None
    event: str
    data: dict[str, Any]

    def as_json(self) -> str:
        return json.dumps({"id": self.id, "event": self.event, "data": self.data})


@dataclass
class SseParser:
    """The text/event-stream format (WHATWG HTML, server-sent events), fed line by line."""

    event: str = ""
    data: list[str] = field(default_factory=list)
    id: str | None = None

    def feed(self, line: str) -> Message | None:
        """The message a blank line completes, else None (comments and fields are kept)."""
        if not line:
            if not self.data:
                self.event = ""
                return None
            text, kind = "\n".join(self.data), self.event or "message"
            self.event, self.data = "", []
            try:
                data = json.loads(text)
            except ValueError:
                data = {"text": text}
            return Message(self.id, kind, data if isinstance(data, dict) else {"value": data})
        if line.startswith(":"):
            return None  # a heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id" and "\0" not in value:
            self.id = value
        return None


class RouteMissing(Exception):
    """The server has no event stream route (an older intake): poll the record instead."""


# ---- the progress bar -------------------------------------------------------------------


def estimated_share(elapsed: float, expected: float) -> float:
    """How much of the generation is likely done after `elapsed` of an `expected` duration:
    linear up to 95%, then creeping towards (never reaching) 99% while it runs late."""
    if expected <= 0 or elapsed <= 0:
        return 0.0
    if elapsed <= expected:
        return 0.95 * elapsed / expected
    return 0.95 + 0.04 * (1 - expected / elapsed)


@dataclass
class Estimate:
    """The bar's state for one job: the stage reached, when generation started, upstream's
    own figure when it gave one, and the expected generation time (seconds)."""

    expected: float
    stage: str = "accepted"
    started: float | None = None  # time.time() of `submitted`
    upstream: int | None = None
    upstream_status: str = ""

    def see(self, kind: str, data: dict[str, Any], now: float) -> None:
        if kind == "progress":
            self.upstream = max(self.upstream or 0, _int(data.get("progress")))
            self.upstream_status = str(data.get("upstream_status") or "")
            if self.started is None:
                self.started = now
        elif kind in ("submitted", "generating") and self.started is None:
            self.started = _epoch(data.get("occurred_at")) or now
        if kind != "progress":
            self.stage = kind
        if isinstance(data.get("expected_seconds"), int | float) and data["expected_seconds"] > 0:
            self.expected = float(data["expected_seconds"])

    def view(self, now: float) -> tuple[int, str, bool]:
        """(percent of the generation, label, whether the percent is an estimate): 0 before the
        upstream starts, then upstream's figure or the estimate, 100 once generated."""
        fixed = {"requested": "requested", "accepted": "accepted", "admitted": "admitted",
                 "submitting": "submitting", "generated": "generated, storing",
                 "storing": "storing", "completed": "completed"}  # fmt: skip
        if self.stage in ("generated", "storing", "completed"):
            return 100, fixed[self.stage], False
        if self.stage in fixed or self.stage in TERMINAL_KINDS or self.started is None:
            return 0, fixed.get(self.stage, self.stage), False
        guess = estimated_share(now - self.started, self.expected)
        if self.upstream is not None and self.upstream / 100 >= guess:
            status = f", {self.upstream_status}" if self.upstream_status else ""
            return self.upstream, f"generating (upstream{status})", False
        return round(guess * 100), "generating (estimated)", True


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


class Progress:
    """A one-line bar on a terminal (redrawn in place); elsewhere a line per stage or upstream
    figure, so a log is not flooded by the estimate's ticks."""

    def __init__(self, estimate: Estimate, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.estimate = estimate
        self.last = -1
        self.label = ""
        self.stage = ""

    def see(self, message: Message) -> None:
        self.estimate.see(message.event, message.data, time.time())
        self.draw(news=message.event == "progress")

    def draw(self, *, news: bool = False) -> None:
        """Redraw (a terminal) or print a line (elsewhere: on a new stage or upstream news)."""
        percent, label, estimated = self.estimate.view(time.time())
        if self.estimate.stage in TERMINAL_KINDS - {"completed"}:
            return  # the report says how it ended
        percent = max(percent, self.last, 0)  # never draw the bar going backwards
        if (percent, label) == (self.last, self.label):
            return
        changed_stage = self.estimate.stage != self.stage
        self.last, self.label, self.stage = percent, label, self.estimate.stage
        filled = percent * 30 // 100
        figure = f"~{percent}%" if estimated else f"{percent}%"
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {figure:>4} {label}"
        if self.tty:
            self.stream.write("\r" + line.ljust(78))
        elif changed_stage or news:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.last >= 0:
            self.stream.write("\n")
            self.stream.flush()


# ---- following ---------------------------------------------------------------------------


@dataclass
class _End:
    error: BaseException | None


async def _read(api: Api, job_id: str, last_id: str | None, queue: asyncio.Queue[Any]) -> None:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    # a quiet job sends only heartbeats; silence longer than this is a dead connection
    timeout = httpx.Timeout(READ_TIMEOUT_SECONDS, connect=5.0)
    path = f"/v1/jobs/{job_id}/events"
    try:
        async with api.http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if response.status_code in (404, 405):
                await response.aread()
                raise RouteMissing
            if not response.is_success:
                await response.aread()
                raise refusal(f"events of {job_id}", response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise RouteMissing  # a server that answers something else there
            parser = SseParser()
            async for line in response.aiter_lines():
                if (message := parser.feed(line)) is not None:
                    await queue.put(message)
        await queue.put(_End(None))
    except Exception as exc:  # handed to the follower, which decides
        await queue.put(_End(exc))


async def stream(
    api: Api,
    job_id: str,
    sink: Callable[[Message], None],
    *,
    last_id: str | None = None,
    tick: Callable[[], None] = lambda: None,
    deadline: float | None = None,
    idle: float | None = None,
) -> tuple[str | None, str | None]:
    """Hand each event of the job's stream to `sink` until the server ends the stream after a
    terminal event: (that kind, the last event id). A dropped connection is resumed with
    Last-Event-ID (MAX_RECONNECTS in a row without a message: CliError UNREACHABLE). Stops
    with (None, last id) past `deadline` (time.monotonic()) or after `idle` seconds without
    an event. RouteMissing when the server has no such route but has the job; CliError
    REFUSED when it has no such job."""
    failures, terminal, seen = 0, None, False
    while True:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(_read(api, job_id, last_id, queue))
        connected = quiet_since = time.monotonic()
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return None, last_id
                # before the first event, more patience: the replay may take a moment to start
                patience = idle if idle is None or seen else 5 * idle
                if patience is not None and time.monotonic() - quiet_since >= patience:
                    return terminal, last_id
                try:
                    item = await asyncio.wait_for(queue.get(), TICK_SECONDS)
                except TimeoutError:
                    tick()
                    continue
                if isinstance(item, _End):
                    break
                failures, seen, quiet_since = 0, True, time.monotonic()
                last_id = item.id if item.id is not None else last_id
                terminal = item.event if item.event in TERMINAL_KINDS else terminal
                sink(item)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if item.error is None and (terminal is not None or idle is not None):
            return terminal, last_id  # ended after the terminal event, or: all there is now
        await _unless_dropped(api, job_id, item.error)
        if time.monotonic() - connected >= LASTED_SECONDS:
            failures = 0  # it worked for a while (a proxy's connection limit, say)
        failures += 1
        if failures > MAX_RECONNECTS:
            if isinstance(item.error, httpx.HTTPError):
                raise unreachable(api.target.url, item.error)
            raise CliError(UNREACHABLE, f"the event stream of {job_id} keeps ending early")
        await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS)) - 1])


async def _unless_dropped(api: Api, job_id: str, error: BaseException | None) -> None:
    """Raise what ended the stream unless it was a dropped connection (or a stream closed
    before a terminal event): those are resumed."""
    if isinstance(error, RouteMissing):
        await _job_exists(api, job_id)
        raise RouteMissing
    if error is not None and not isinstance(error, httpx.HTTPError):
        raise error


async def _job_exists(api: Api, job_id: str) -> None:
    response = await api.call("GET", f"/v1/jobs/{job_id}")
    if response.status_code == 404:
        raise CliError(REFUSED, f"no job {job_id} for this API key")
    if not response.is_success:
        raise refusal(f"job {job_id}", response)


def changes(before: dict[str, Any] | None, record: dict[str, Any]) -> Iterator[Message]:
    """The events a polled record shows since `before`: each new step of its history in time
    order, a changed progress among them before the generation's end."""
    seen = (before or {}).get("history") or {}
    history = record.get("history") or {}
    progress = record.get("progress")
    news = bool(progress) and progress != (before or {}).get("progress")
    for kind, at in sorted(history.items(), key=lambda item: str(item[1])):
        if kind in seen:
            continue
        if news and kind in AFTER_GENERATION:
            yield Message(None, "progress", {"progress": progress})
            news = False
        yield Message(None, kind, {"job_id": record.get("job_id"), "occurred_at": at})
    if news:
        yield Message(None, "progress", {"progress": progress})
    status = record.get("status")
    if status in TERMINAL_KINDS and status not in history:
        yield Message(None, str(status), {"job_id": record.get("job_id")})


async def poll(
    api: Api,
    job_id: str,
    sink: Callable[[Message], None],
    *,
    tick: Callable[[], None] = lambda: None,
    deadline: float | None = None,
    once: bool = False,
) -> dict[str, Any] | None:
    """Read the job's record every POLL_SECONDS, handing what changed to `sink` as events, until
    it has ended: that record (None past `deadline`). `once`: one read."""
    before: dict[str, Any] | None = None
    while True:
        record = await api.json(f"job {job_id}", "GET", f"/v1/jobs/{job_id}")
        for message in changes(before, record):
            sink(message)
        before = record
        if once or record.get("status") in TERMINAL_KINDS:
            return dict(record)
        next_read = time.monotonic() + POLL_SECONDS
        while (left := next_read - time.monotonic()) > 0:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(left, TICK_SECONDS))  # the interval of a poll
            tick()

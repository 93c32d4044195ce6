"""Benchmark harness: drive an ASGI app in-process or a server over loopback HTTP; measure CPU.

Kept apart from the benchmarks so each one drives its app and its baseline the same way.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipline.servers import LOOPBACK, http_ok, spawn, stop_pid, wait_until

ROOT = Path(__file__).resolve().parent.parent

# (method, path, body, content type) -> (status, body): one request over any transport.
Call = Callable[[str, str, bytes, str], Awaitable[tuple[int, bytes]]]
Job = Callable[[Call], Awaitable[None]]
AsgiApp = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Result:
    name: str
    jobs: int
    seconds: float
    server_cpu_seconds: float  # in-process: the whole process (app + harness)
    client_cpu_seconds: float | None = None  # over HTTP only: the load generator

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.jobs / self.server_cpu_seconds if self.server_cpu_seconds else 0.0

    @property
    def micros_per_job(self) -> float:
        return 1e6 * self.server_cpu_seconds / self.jobs


# --- in-process: the ASGI app called directly ---------------------------------------------------


def asgi_call(app: AsgiApp, api_key: str) -> Call:
    """Requests as a server would hand them to `app`, without sockets or HTTP parsing."""
    authorization = (b"authorization", f"Bearer {api_key}".encode())

    async def call(method: str, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        headers = [(b"host", b"bench"), authorization]
        if content_type:
            headers.append((b"content-type", content_type.encode()))
            headers.append((b"content-length", str(len(body)).encode()))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        out: list[MutableMapping[str, Any]] = []
        received = False

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            # As a real server: nothing more until the client goes away, which it never does.
            return await asyncio.get_running_loop().create_future()  # type: ignore[no-any-return]

        async def send(message: MutableMapping[str, Any]) -> None:
            out.append(message)

        await app(scope, receive, send)
        return out[0]["status"], b"".join(m.get("body", b"") for m in out[1:])

    return call


async def in_process(name: str, app: AsgiApp, job: Job, seconds: float, api_key: str) -> Result:
    """Run `job` back to back against `app` for about `seconds`; CPU is the whole process."""
    call = asgi_call(app, api_key)
    await job(call)  # warm-up: renders the asset once
    cpu_before = time.process_time()
    started = time.perf_counter()
    jobs = 0
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            await job(call)
        jobs += 100
    elapsed = time.perf_counter() - started
    return Result(name, jobs, elapsed, time.process_time() - cpu_before)


# --- over HTTP: a lean HTTP/1.1 keep-alive client -----------------------------------------------


class Connection:
    """One keep-alive connection; just enough HTTP/1.1 for these responses (Content-Length)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, api_key: str
    ) -> None:
        self.reader, self.writer = reader, writer
        self._fixed = f"Host: bench\r\nAuthorization: Bearer {api_key}\r\n"

    @classmethod
    async def open(cls, port: int, api_key: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, api_key)

    async def request(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\n{self._fixed}"
        if content_type:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, job: Job, seconds: float, *, connections: int, api_key: str
) -> tuple[int, float]:
    """Run `job` in a loop on `connections` connections for `seconds`: (jobs, client CPU-s)."""
    opened = [await Connection.open(port, api_key) for _ in range(connections)]
    for connection in opened:  # warm-up: the first asset render is not part of the rate
        await job(connection.request)
    cpu_before = time.process_time()
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(connection: Connection) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await job(connection.request)
            done += 1

    await asyncio.gather(*(worker(connection) for connection in opened))
    client_cpu = time.process_time() - cpu_before
    for connection in opened:
        connection.close()
    return done, client_cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/<pid>/stat utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process, all its threads, apart."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of a process's live threads, summed
    (/proc/<pid>/task/*/status; a thread that has exited is no longer counted)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # the thread exited meanwhile
        for line in text.splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


async def over_http(
    name: str,
    argv: list[str],
    env: dict[str, str],
    job: Job,
    seconds: float,
    *,
    port: int,
    connections: int,
    api_key: str,
) -> Result:
    """Start the server `argv` (it must listen on `port`), drive it, stop it by its PID."""
    with tempfile.TemporaryDirectory(prefix="clipline-bench-") as logs:
        proc = spawn(name, argv, Path(logs) / "server.log", env=env, cwd=ROOT)
        try:
            await asyncio.to_thread(
                wait_until, http_ok(f"http://{LOOPBACK}:{port}/healthz"), name, 30, proc
            )
            before = cpu_seconds(proc.pid)
            started = time.perf_counter()
            jobs, client_cpu = await drive(
                port, job, seconds, connections=connections, api_key=api_key
            )
            elapsed = time.perf_counter() - started
            used = cpu_seconds(proc.pid) - before
        finally:
            stop_pid(proc.pid)  # by PID: the server we started, nothing else
    return Result(name, jobs, elapsed, used, client_cpu)

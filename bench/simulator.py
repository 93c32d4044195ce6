"""Benchmark: the simulator's create + retrieve + download rate in zero-latency mode.

Goal (issue 3): at least 3x the pipeline's throughput goal of 500 jobs/s, i.e. 1500 jobs/s.
One "job" is the client's whole round: POST /v1/videos (JSON), GET /v1/videos/{id} (completed
at once in zero-latency mode), GET /v1/videos/{id}/content (the MP4, small-asset mode).

Three measurements, all in this run:
1. in-process: the ASGI app called directly (no sockets): the simulator's own cost per job.
2. HTTP: `python -m services.simulator` (uvicorn, uvloop, httptools) on a free loopback port,
   driven by a lean keep-alive HTTP/1.1 client (raw asyncio streams). On a 2-core machine the
   client competes for the CPU, so the simulator's CPU time (from /proc) is also reported:
   jobs per simulator CPU-second is its capacity when it has a core to itself.
3. baseline: a trivial ASGI app answering every request with a tiny JSON body, served and
   driven identically: the ceiling of this server + client, against which the simulator is
   compared.

Usage: python -m bench.simulator [seconds per HTTP phase, default 8]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOAL_JOBS_PER_SECOND = 1500  # 3 x the pipeline's 500 jobs/s
API_KEY = "sk-bench"
CONNECTIONS = 32
ROOT = Path(__file__).resolve().parent.parent
SIM_ENV = {
    "CLIPLINE_SIM_API_KEY": API_KEY,
    "CLIPLINE_SIM_QUEUE_SECONDS": "0",
    "CLIPLINE_SIM_GENERATION_SECONDS": "0",
    "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",
    "CLIPLINE_SIM_SMALL_ASSETS": "true",
    "CLIPLINE_SIM_POLL_AFTER_MS": "0",
}
BASELINE_APP = textwrap.dedent(
    """
    import sys, uvicorn
    BODY = b'{"id":"video_0","status":"completed"}'
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False, loop="uvloop", http="httptools", lifespan="off")
    """
)
CREATE_FIELDS = {"prompt": "a paper boat", "size": "1280x720", "seconds": "4"}
CREATE_BODY = json.dumps(CREATE_FIELDS).encode()
BOUNDARY = "clipline-bench-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# What openai-python >= 2.27 sends for every create (reference §3.2).
MULTIPART_BODY = (
    "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in CREATE_FIELDS.items()
    )
    + f"--{BOUNDARY}--\r\n"
).encode()


@dataclass(frozen=True)
class Result:
    name: str
    jobs: int
    seconds: float
    server_cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def per_cpu_second(self) -> float | None:
        if not self.server_cpu_seconds:
            return None
        return self.jobs / self.server_cpu_seconds


# --- a lean HTTP/1.1 keep-alive client ----------------------------------------------------------


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def simulator_job(connection: Connection) -> None:
    await _simulator_job(connection, CREATE_BODY, "application/json")


async def simulator_multipart_job(connection: Connection) -> None:
    await _simulator_job(connection, MULTIPART_BODY, MULTIPART)


async def _simulator_job(connection: Connection, create: bytes, content_type: str) -> None:
    status, body = await connection.request("POST", "/v1/videos", create, content_type)
    assert status == 200, body
    video_id = json.loads(body)["id"]
    status, body = await connection.request("GET", f"/v1/videos/{video_id}")
    assert status == 200, body
    assert json.loads(body)["status"] == "completed", body
    status, body = await connection.request("GET", f"/v1/videos/{video_id}/content")
    assert status == 200, body
    assert body[4:8] == b"ftyp", body[:64]


async def baseline_job(connection: Connection) -> None:
    for method, path, body in (
        ("POST", "/v1/videos", CREATE_BODY),
        ("GET", "/v1/videos/video_0", b""),
        ("GET", "/v1/videos/video_0/content", b""),
    ):
        status, _ = await connection.request(method, path, body)
        assert status == 200


async def drive(port: int, job: Callable[[Connection], Awaitable[None]], seconds: float) -> int:
    """Run `job` in a loop on CONNECTIONS connections for `seconds`; return how many finished."""
    connections = [await Connection.open(port) for _ in range(CONNECTIONS)]
    for connection in connections:  # warm-up: the first asset render is not part of the rate
        await job(connection)
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(connection: Connection) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await job(connection)
            done += 1

    await asyncio.gather(*(worker(connection) for connection in connections))
    for connection in connections:
        connection.close()
    return done


# --- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


async def wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # polling a port that is not open yet
            continue
        writer.close()
        return


async def over_http(
    name: str, argv: list[str], env: dict[str, str], job: Callable[[Connection], Awaitable[None]],
    seconds: float, port: int,
) -> Result:  # fmt: skip
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, before the measurement
        argv,
        cwd=ROOT,
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await wait_listening(port, process)
        before = cpu_seconds(process.pid)
        started = time.perf_counter()
        jobs = await drive(port, job, seconds)
        elapsed = time.perf_counter() - started
        used = cpu_seconds(process.pid) - before
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    return Result(name, jobs, elapsed, used)


# --- in-process ---------------------------------------------------------------------------------


async def in_process(seconds: float) -> Result:
    os.environ.update(SIM_ENV)
    from services.simulator.app import build_app  # noqa: PLC0415 - settings come from SIM_ENV
    from services.simulator.settings import SimulatorSettings  # noqa: PLC0415

    app = build_app(SimulatorSettings())
    headers = [(b"authorization", f"Bearer {API_KEY}".encode())]
    headers.append((b"content-type", b"application/json"))

    async def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        scope: dict[str, Any] = {
            "type": "http", "method": method, "path": path, "query_string": b"",
            "headers": headers,
        }  # fmt: skip
        out: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            out.append(message)

        await app(scope, receive, send)
        return out[0]["status"], b"".join(m.get("body", b"") for m in out[1:])

    async def job() -> None:
        status, body = await call("POST", "/v1/videos", CREATE_BODY)
        video_id = json.loads(body)["id"]
        status, body = await call("GET", f"/v1/videos/{video_id}")
        assert json.loads(body)["status"] == "completed"
        status, body = await call("GET", f"/v1/videos/{video_id}/content")
        assert status == 200
        assert body[4:8] == b"ftyp"

    await job()  # warm-up: renders the asset once
    cpu_before = time.process_time()
    started = time.perf_counter()
    jobs = 0
    while time.perf_counter() - started < seconds:
        for _ in range(100):
            await job()
        jobs += 100
    return Result(
        "in-process (ASGI, no sockets)",
        jobs,
        time.perf_counter() - started,
        time.process_time() - cpu_before,
    )


async def main(seconds: float) -> list[Result]:
    results = [await in_process(min(seconds, 5))]
    port = free_port()
    results.append(
        await over_http(
            "baseline: trivial ASGI app, same server + client",
            [sys.executable, "-c", BASELINE_APP, str(port)],
            {},
            baseline_job,
            seconds,
            port,
        )
    )
    for name, job in (
        ("simulator over HTTP, JSON create (SDK 2.x)", simulator_job),
        ("simulator over HTTP, multipart create (SDK 3.x)", simulator_multipart_job),
    ):
        port = free_port()
        sim_env = SIM_ENV | {"CLIPLINE_SIM_HOST": "127.0.0.1", "CLIPLINE_SIM_PORT": str(port)}
        results.append(
            await over_http(
                name, [sys.executable, "-m", "services.simulator"], sim_env, job, seconds, port
            )
        )
    return results


def report(results: list[Result]) -> None:
    cores = os.cpu_count()
    print(f"\nsimulator benchmark: zero-latency, small assets, {CONNECTIONS} keep-alive "
          f"connections, {cores} cores; goal {GOAL_JOBS_PER_SECOND} jobs/s "
          "(create+retrieve+download)\n")  # fmt: skip
    print(f"{'measurement':52} {'jobs':>8} {'jobs/s':>9} {'jobs/server-CPU-s':>18} {'x goal':>7}")
    for r in results:
        per_cpu = f"{r.per_cpu_second:,.0f}" if r.per_cpu_second else "-"
        print(
            f"{r.name:52} {r.jobs:>8} {r.rate:>9,.0f} {per_cpu:>18} "
            f"{r.rate / GOAL_JOBS_PER_SECOND:>7.2f}"
        )
    inproc, baseline, *over_http_results = results
    print()
    for http in over_http_results:
        print(http.name)
        print(f"  / baseline over HTTP (wall rate):   {http.rate / baseline.rate:.2f}")
        if http.per_cpu_second and baseline.per_cpu_second:
            ratio = http.per_cpu_second / baseline.per_cpu_second
            print(f"  / baseline per server CPU-second:   {ratio:.2f}")
            capacity = http.per_cpu_second / GOAL_JOBS_PER_SECOND
            print(f"  capacity per core / goal:           {capacity:.2f}x")
        print(f"  wall rate / goal:                   {http.rate / GOAL_JOBS_PER_SECOND:.2f}x")
    inproc_ratio = inproc.rate / GOAL_JOBS_PER_SECOND
    print(f"in-process simulator / goal:                     {inproc_ratio:.2f}x")


if __name__ == "__main__":
    import uvloop

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    report(uvloop.run(main(seconds)))

"""Benchmark: the simulator's create + retrieve + download rate in zero-latency mode.

Goal (the issue): at least 3x the pipeline's throughput goal of 500 jobs/s, i.e. 1500 jobs/s.
One "job" is a client's whole round: POST /v1/videos, GET /v1/videos/{id} (completed at once in
zero-latency mode), GET /v1/videos/{id}/content (the whole MP4; small-asset mode).

Measured in this run, each next to a baseline driven identically:
1. in-process: the ASGI app called directly (no sockets): the simulator's own cost per job.
   Baseline: a trivial ASGI app (a tiny JSON body for every request) through the same harness.
   Then once more with CLIPLINE_SIM_STATE_DIR set: the difference is what the journal costs.
2. over HTTP: `python -m services.simulator` (uvicorn, uvloop, httptools) on a free loopback port,
   driven by a lean keep-alive HTTP/1.1 client (raw asyncio streams). Baseline: the same trivial
   app under the same uvicorn options: the ceiling of this server + client. On a 2-core machine
   client and server share the CPU, so the server's CPU time (from /proc) is reported too: jobs
   per server CPU-second is the simulator's capacity with a core to itself. The client's CPU
   share shows whether the client, not the server, was the limit.

Usage: python -m bench.simulator [seconds per HTTP phase]  (or BENCH_SECONDS; default 8, ~35 s)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from bench.harness import AsgiApp, Call, Result, in_process, over_http
from clipline.servers import free_port

GOAL_JOBS_PER_SECOND = 1500  # 3 x the pipeline's 500 jobs/s
API_KEY = "sk-bench"
CONNECTIONS = 32
SIM_ENV = {
    "CLIPLINE_SIM_API_KEY": API_KEY,
    "CLIPLINE_SIM_QUEUE_SECONDS": "0",
    "CLIPLINE_SIM_GENERATION_SECONDS": "0",
    "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",
    "CLIPLINE_SIM_SMALL_ASSETS": "true",
    "CLIPLINE_SIM_POLL_AFTER_MS": "0",
}
# The baseline server: the trivial app below under the uvicorn options of services/simulator.
BASELINE_SERVER = """
import sys, uvicorn
from bench.simulator import baseline_app
uvicorn.run(baseline_app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools", lifespan="off",
            proxy_headers=False, server_header=False)
"""
BASELINE_BODY = b'{"id":"video_0","object":"video","status":"completed"}'
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


# --- the jobs -----------------------------------------------------------------------------------


async def simulator_job(call: Call) -> None:
    await _simulator_job(call, CREATE_BODY, "application/json")


async def simulator_multipart_job(call: Call) -> None:
    await _simulator_job(call, MULTIPART_BODY, MULTIPART)


async def _simulator_job(call: Call, create: bytes, content_type: str) -> None:
    status, body = await call("POST", "/v1/videos", create, content_type)
    assert status == 200, body
    video_id = json.loads(body)["id"]
    status, body = await call("GET", f"/v1/videos/{video_id}", b"", "")
    assert status == 200, body
    assert json.loads(body)["status"] == "completed", body
    status, body = await call("GET", f"/v1/videos/{video_id}/content", b"", "")
    assert status == 200, body
    assert body[4:8] == b"ftyp", body[:64]


async def baseline_job(call: Call) -> None:
    """The same three requests and the same client-side parsing, against the trivial app."""
    status, body = await call("POST", "/v1/videos", CREATE_BODY, "application/json")
    assert status == 200, body
    video_id = json.loads(body)["id"]
    status, body = await call("GET", f"/v1/videos/{video_id}", b"", "")
    assert json.loads(body)["status"] == "completed", body
    status, body = await call("GET", f"/v1/videos/{video_id}/content", b"", "")
    assert status == 200, body


async def baseline_app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """The harness ceiling: reads the request, answers a tiny JSON body, nothing else."""
    if scope["type"] != "http":
        return
    await receive()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BASELINE_BODY)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BASELINE_BODY})


def simulator_app(state_dir: Path | None = None) -> AsgiApp:
    os.environ.update(SIM_ENV)
    # Imported here: the baseline server imports this module and must not load the simulator.
    from services.simulator.app import build_app  # noqa: PLC0415
    from services.simulator.settings import SimulatorSettings  # noqa: PLC0415

    app: AsgiApp = build_app(SimulatorSettings(state_dir=state_dir))
    return app


# --- the run ------------------------------------------------------------------------------------


async def main(seconds: float) -> list[Result]:
    in_process_seconds = max(1.0, seconds / 3)
    results = [
        await in_process(
            "in-process baseline: trivial ASGI app",
            baseline_app,
            baseline_job,
            in_process_seconds,
            API_KEY,
        ),
        await in_process(
            "in-process simulator (ASGI, no sockets)",
            simulator_app(),
            simulator_job,
            in_process_seconds,
            API_KEY,
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="clipline-bench-") as state_dir:
        results.append(
            await in_process(
                "in-process simulator, journaled (STATE_DIR)",
                simulator_app(Path(state_dir)),
                simulator_job,
                in_process_seconds,
                API_KEY,
            )
        )
    port = free_port()
    baseline = [sys.executable, "-c", BASELINE_SERVER, str(port)]
    name = "HTTP baseline: trivial ASGI app"
    results.append(
        await over_http(
            name,
            baseline,
            {},
            baseline_job,
            seconds,
            port=port,
            connections=CONNECTIONS,
            api_key=API_KEY,
        )
    )
    for name, job in (
        ("HTTP simulator, JSON create (SDK 2.x)", simulator_job),
        ("HTTP simulator, multipart create (SDK 3.x)", simulator_multipart_job),
    ):
        port = free_port()
        sim_env = SIM_ENV | {"CLIPLINE_SIM_HOST": "127.0.0.1", "CLIPLINE_SIM_PORT": str(port)}
        argv = [sys.executable, "-m", "services.simulator"]
        results.append(
            await over_http(
                name,
                argv,
                sim_env,
                job,
                seconds,
                port=port,
                connections=CONNECTIONS,
                api_key=API_KEY,
            )
        )
    return results


def report(results: list[Result]) -> None:
    print(
        f"\nsimulator benchmark: zero-latency, small assets; job = create + retrieve + download;"
        f" {CONNECTIONS} keep-alive connections over HTTP; {os.cpu_count()} cores;"
        f" goal {GOAL_JOBS_PER_SECOND} jobs/s\n"
    )
    print(
        f"{'measurement':43} {'jobs':>7} {'jobs/s':>7} {'x goal':>6} {'server cores':>12}"
        f" {'jobs/server-CPU-s':>17} {'µs CPU/job':>10} {'client cores':>12}"
    )
    for r in results:
        client = f"{r.client_cpu_seconds / r.seconds:.2f}" if r.client_cpu_seconds else "-"
        print(
            f"{r.name:43} {r.jobs:>7} {r.rate:>7,.0f} {r.rate / GOAL_JOBS_PER_SECOND:>6.2f}"
            f" {r.server_cpu_seconds / r.seconds:>12.2f} {r.per_cpu_second:>17,.0f}"
            f" {r.micros_per_job:>10,.0f} {client:>12}"
        )
    in_base, in_sim, in_journal, http_base, *http_sims = results
    print("\nin-process (cost of the app itself; harness included in both):")
    print(f"  simulator / baseline rate:                {in_sim.rate / in_base.rate:.2f}")
    own = in_sim.micros_per_job - in_base.micros_per_job
    print(f"  simulator's own CPU per job:              {own:,.0f} µs")
    journal = in_journal.micros_per_job - in_sim.micros_per_job
    print(f"  the journal's CPU per job (STATE_DIR):    {journal:,.0f} µs")
    print(f"  simulator / goal:                         {in_sim.rate / GOAL_JOBS_PER_SECOND:.2f}x")
    for http in http_sims:
        print(f"{http.name}:")
        print(f"  / HTTP baseline, wall rate:               {http.rate / http_base.rate:.2f}")
        ratio = http.per_cpu_second / http_base.per_cpu_second
        print(f"  / HTTP baseline, per server CPU-second:   {ratio:.2f}")
        print(
            f"  wall rate / goal:                         {http.rate / GOAL_JOBS_PER_SECOND:.2f}x"
        )
        capacity = http.per_cpu_second / GOAL_JOBS_PER_SECOND
        print(f"  one server core's capacity / goal:        {capacity:.2f}x")
    print(
        "\n(server cores: CPU-seconds per wall second of the server process; client cores: of"
        " the load generator, ~1.00 means the client was the limit)"
    )


def _seconds(argv: list[str]) -> float:
    if len(argv) > 1:
        return float(argv[1])
    return float(os.environ.get("BENCH_SECONDS", "8"))


if __name__ == "__main__":
    import uvloop

    report(uvloop.run(main(_seconds(sys.argv))))

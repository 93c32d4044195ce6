"""The embedded local stack: nats-server, SeaweedFS, the simulator and the five services."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clipline.servers import (
    LOOPBACK,
    Proc,
    ServerError,
    free_port,
    http_ok,
    pid_alive,
    spawn,
    start_nats,
    start_seaweed,
    stop_pid,
    wait_until,
)
from shared.streams import MAX_PAYLOAD_BYTES

SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
STATE_FILE = "stack.json"
LOCAL_API_KEY = "sk-clipline-local"
BUCKET = "clipline-assets"


def is_ours(pid: int, home: str) -> bool:
    """True when `pid` runs in (or on) this stack's folder: every process `up` starts does."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return cwd.startswith(home) or home in cmdline


def default_home() -> Path:
    return Path(os.environ.get("CLIPLINE_HOME", Path.cwd() / ".clipline")).resolve()


@dataclass
class ProcInfo:
    name: str
    pid: int
    port: int | None
    log: str


@dataclass
class StackState:
    """Connection details of a running stack, written to <home>/stack.json for other commands."""

    home: str
    nats_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    bucket: str
    simulator_url: str
    intake_url: str
    processes: list[ProcInfo] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.home) / STATE_FILE
        path.unlink(missing_ok=True)
        # Created 0600 from the start: it holds the local S3 secret and API key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        path = home / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        procs = [ProcInfo(**p) for p in data.pop("processes")]
        return cls(**data, processes=procs)

    def alive(self) -> list[ProcInfo]:
        """Processes of this stack still running (a reused PID of another program is not ours)."""
        return [p for p in self.processes if pid_alive(p.pid) and is_ours(p.pid, self.home)]


@dataclass(frozen=True)
class StackOptions:
    generation_seconds: float = 4.0
    queue_seconds: float = 0.5
    poll_after_ms: int = 500
    startup_timeout: float = 60.0


def _python_module(name: str, module: str, home: Path, env: dict[str, str]) -> Proc:
    return spawn(name, [sys.executable, "-m", module], home / "logs" / f"{name}.log", env, home)


def up(home: Path, options: StackOptions | None = None) -> StackState:
    """Start everything, wait until each part is healthy, record the state. Idempotent."""
    options = options or StackOptions()
    existing = StackState.load(home)
    if existing is not None and existing.alive():
        if len(existing.alive()) == len(existing.processes):
            return existing
        down(home)
    home.mkdir(parents=True, exist_ok=True)
    started: list[tuple[Proc, int | None]] = []
    try:
        return _start(home, options, started)
    except BaseException:
        for proc, _ in reversed(started):
            stop_pid(proc.pid)
        (home / STATE_FILE).unlink(missing_ok=True)
        raise


def _start(home: Path, options: StackOptions, started: list[tuple[Proc, int | None]]) -> StackState:
    logs = home / "logs"
    nats = start_nats(home / "nats", logs, max_payload=MAX_PAYLOAD_BYTES)
    started.append((nats.proc, nats.port))
    s3 = start_seaweed(home / "s3", logs)
    started.append((s3.proc, s3.port))
    sim_port = free_port()
    sim_env = {
        "CLIPLINE_SIM_HOST": LOOPBACK,
        "CLIPLINE_SIM_PORT": str(sim_port),
        "CLIPLINE_SIM_API_KEY": LOCAL_API_KEY,
        "CLIPLINE_SIM_GENERATION_SECONDS": str(options.generation_seconds),
        "CLIPLINE_SIM_QUEUE_SECONDS": str(options.queue_seconds),
        "CLIPLINE_SIM_POLL_AFTER_MS": str(options.poll_after_ms),
        "CLIPLINE_SIM_ASSET_DIR": str(home / "sim-assets"),
    }
    sim = _python_module("simulator", "services.simulator", home, sim_env)
    started.append((sim, sim_port))
    sim_url = f"http://{LOOPBACK}:{sim_port}"
    wait_until(http_ok(f"{sim_url}/healthz"), "simulator", options.startup_timeout, sim)
    common = {
        "CLIPLINE_NATS_URL": nats.url,
        "CLIPLINE_HTTP_HOST": LOOPBACK,
        "CLIPLINE_S3_ENDPOINT": s3.endpoint,
        "CLIPLINE_S3_ACCESS_KEY": s3.access_key,
        "CLIPLINE_S3_SECRET_KEY": s3.secret_key,
        "CLIPLINE_S3_BUCKET": BUCKET,
        "CLIPLINE_UPSTREAM_BASE_URL": f"{sim_url}/v1",
        "CLIPLINE_UPSTREAM_API_KEY": LOCAL_API_KEY,
        "CLIPLINE_POLL_DEFAULT_SECONDS": "1.0",
    }
    ports: dict[str, int] = {}
    for name in SERVICES:
        ports[name] = free_port()
        proc = _python_module(
            name, f"services.{name}", home, {**common, "CLIPLINE_HTTP_PORT": str(ports[name])}
        )
        started.append((proc, ports[name]))
    for proc, port in started[3:]:
        url = f"http://{LOOPBACK}:{port}/healthz"
        wait_until(http_ok(url), proc.name, options.startup_timeout, proc)
    state = StackState(
        home=str(home),
        nats_url=nats.url,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        bucket=BUCKET,
        simulator_url=sim_url,
        intake_url=f"http://{LOOPBACK}:{ports['intake']}",
        processes=[ProcInfo(p.name, p.pid, port, str(p.log_path)) for p, port in started],
    )
    state.save()
    return state


def down(home: Path) -> list[ProcInfo]:
    """Stop every process of the stack (services first); returns any that survived."""
    state = StackState.load(home)
    if state is None:
        return []
    for proc in reversed(state.alive()):
        stop_pid(proc.pid)
    survivors = state.alive()
    if not survivors:
        (home / STATE_FILE).unlink(missing_ok=True)
    return survivors


def require(home: Path) -> StackState:
    state = StackState.load(home)
    if state is None or not state.alive():
        raise ServerError(f"no clipline stack is running under {home}: run `clipline up`")
    return state

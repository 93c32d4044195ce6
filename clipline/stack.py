"""The embedded local stack: nats-server, SeaweedFS, the simulator and the five services."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clipline.servers import (
    LOG_BACKUPS,
    LOG_MAX_BYTES,
    LOOPBACK,
    Proc,
    ServerError,
    free_port,
    http_ok,
    pid_alive,
    s3_ready,
    spawn,
    start_nats,
    start_seaweed,
    stop_pid,
    wait_until,
)
from shared.streams import MAX_PAYLOAD_BYTES

SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
LOCAL_API_KEY = "sk-clipline-local"
BUCKET = "clipline-assets"
ALIASES = {"s3": "seaweedfs"}
# What the Python processes read from the environment they inherit. It is recorded with them, so
# a restart from another shell runs them with the same settings (and the same code).
INHERITED_PREFIXES = ("CLIPLINE_", "OTEL_")
INHERITED_NAMES = ("PYTHONPATH",)
# A live part that does not answer may only be waiting for a part started just before it (a
# service reconnecting to nats); `up` replaces it only when it is still silent after this.
HEAL_GRACE_SECONDS = 15.0


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
    """One process of the stack, and what it takes to start it again the same way."""

    name: str
    pid: int
    port: int | None
    log: str  # the log the process writes itself, size-capped: what `clipline logs` shows
    output: str = ""  # its raw stdout/stderr: output from before its logging was set up, crashes
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # set on top of the inherited environment
    cwd: str | None = None
    health: str = ""  # a URL that answers once the process is ready

    @classmethod
    def of(cls, proc: Proc, port: int | None, health: str) -> ProcInfo:
        return cls(
            name=proc.name,
            pid=proc.pid,
            port=port,
            log=str(proc.log_file or proc.log_path),
            output=str(proc.log_path),
            argv=proc.argv,
            env=proc.env,
            cwd=None if proc.cwd is None else str(proc.cwd),
            health=health,
        )

    def log_files(self) -> list[Path]:
        """The process's own log, then its raw output when that is another file."""
        files = [Path(self.log)]
        if self.output and self.output != self.log:
            files.append(Path(self.output))
        return files


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
        draft = path.with_name(f".{STATE_FILE}.{os.getpid()}")
        draft.unlink(missing_ok=True)
        # Created 0600 from the start: it holds the local S3 secret and API key. Renamed into
        # place, so a reader never sees half a file.
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(self), indent=2))
        draft.replace(path)

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        path = home / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        procs = [ProcInfo(**p) for p in data.pop("processes")]
        return cls(**data, processes=procs)

    def running(self, proc: ProcInfo) -> bool:
        """The process is alive (a reused PID of another program is not ours)."""
        return pid_alive(proc.pid) and is_ours(proc.pid, self.home)

    def alive(self) -> list[ProcInfo]:
        """Processes of this stack still running."""
        return [p for p in self.processes if self.running(p)]

    def find(self, name: str) -> ProcInfo:
        wanted = ALIASES.get(name, name)
        for proc in self.processes:
            if proc.name == wanted:
                return proc
        names = ", ".join(p.name for p in self.processes)
        raise ServerError(f"no process named {name!r}: one of {names} (s3 means seaweedfs)")


@dataclass(frozen=True)
class StackOptions:
    generation_seconds: float = 4.0
    queue_seconds: float = 0.5
    poll_after_ms: int = 500
    startup_timeout: float = 60.0
    log_max_bytes: int = LOG_MAX_BYTES  # each process's log is rotated at this size...
    log_backups: int = LOG_BACKUPS  # ...keeping this many older files
    # Extra variables for the simulator and the services (faults, rate limits, ...); they win
    # over the stack's own settings.
    env: Mapping[str, str] = field(default_factory=dict)


def health_check(proc: ProcInfo) -> Callable[[], bool]:
    if not proc.health:
        return lambda: True  # recorded by an older clipline: judged by its process alone
    return s3_ready(proc.health) if proc.name == "seaweedfs" else http_ok(proc.health)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One command at a time changes a stack (two `up`s would start everything twice)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _inherited() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith(INHERITED_PREFIXES) or k in INHERITED_NAMES
    }


def _python_module(name: str, home: Path, env: dict[str, str], options: StackOptions) -> Proc:
    """`python -m services.<name>`, logging to <home>/logs/<name>.log through shared.logs."""
    logs = home / "logs"
    log_file = logs / f"{name}.log"
    settings = {
        **_inherited(),
        **env,
        "CLIPLINE_LOG_FILE": str(log_file),
        "CLIPLINE_LOG_MAX_BYTES": str(options.log_max_bytes),
        "CLIPLINE_LOG_BACKUPS": str(options.log_backups),
        **options.env,
    }
    argv = [sys.executable, "-m", f"services.{name}"]
    return spawn(
        name, argv, logs / f"{name}.stderr", settings, home, log_file=log_file,
        replace_prefixes=INHERITED_PREFIXES, replace_names=INHERITED_NAMES,
    )  # fmt: skip


def up(home: Path, options: StackOptions | None = None) -> StackState:
    """Start what is not running (or not healthy), wait until each part is healthy, record it.

    With no stack recorded, or none of its processes left (a reboot), everything starts on fresh
    ports. Otherwise each dead or unhealthy part starts again with its recorded command line,
    environment and ports, and a healthy part is left alone (in-flight jobs go on).
    """
    options = options or StackOptions()
    with _locked(home):
        existing = StackState.load(home)
        if existing is not None and existing.alive():
            return _heal(existing, options.startup_timeout)
        started: list[tuple[Proc, int | None, str]] = []
        try:
            return _start(home, options, started)
        except BaseException:
            for proc, _, _ in reversed(started):
                stop_pid(proc.pid)
            (home / STATE_FILE).unlink(missing_ok=True)
            raise


def _start(
    home: Path, options: StackOptions, started: list[tuple[Proc, int | None, str]]
) -> StackState:
    logs = home / "logs"
    cap, backups = options.log_max_bytes, options.log_backups
    nats = start_nats(
        home / "nats", logs, max_payload=MAX_PAYLOAD_BYTES, log_max_bytes=cap, log_backups=backups
    )
    started.append((nats.proc, nats.port, nats.health))
    s3 = start_seaweed(home / "s3", logs, log_max_bytes=cap, log_backups=backups)
    started.append((s3.proc, s3.port, s3.health))
    sim_port = free_port()
    sim_env = {
        "CLIPLINE_SIM_HOST": LOOPBACK,
        "CLIPLINE_SIM_PORT": str(sim_port),
        "CLIPLINE_SIM_API_KEY": LOCAL_API_KEY,
        "CLIPLINE_SIM_GENERATION_SECONDS": str(options.generation_seconds),
        "CLIPLINE_SIM_QUEUE_SECONDS": str(options.queue_seconds),
        "CLIPLINE_SIM_POLL_AFTER_MS": str(options.poll_after_ms),
        "CLIPLINE_SIM_ASSET_DIR": str(home / "sim-assets"),
        # Where the simulator keeps its jobs, so they survive its restart.
        "CLIPLINE_SIM_STATE_DIR": str(home / "sim-state"),
    }
    sim = _python_module("simulator", home, sim_env, options)
    sim_url = f"http://{LOOPBACK}:{sim_port}"
    started.append((sim, sim_port, f"{sim_url}/healthz"))
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
        port = ports[name] = free_port()
        proc = _python_module(name, home, {**common, "CLIPLINE_HTTP_PORT": str(port)}, options)
        started.append((proc, port, f"http://{LOOPBACK}:{port}/healthz"))
    for proc, _, health in started[3:]:
        wait_until(http_ok(health), proc.name, options.startup_timeout, proc)
    state = StackState(
        home=str(home),
        nats_url=nats.url,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        bucket=BUCKET,
        simulator_url=sim_url,
        intake_url=f"http://{LOOPBACK}:{ports['intake']}",
        processes=[ProcInfo.of(proc, port, health) for proc, port, health in started],
    )
    state.save()
    return state


def _heal(state: StackState, timeout: float) -> StackState:
    """Start the dead parts again (nats first, services last), then any that stay unhealthy."""
    for proc in state.processes:
        if not state.running(proc):
            _respawn(state, proc, timeout)
    deadline = time.monotonic() + HEAL_GRACE_SECONDS
    for proc in state.processes:
        if not _healthy_by(proc, deadline):
            stop_pid(proc.pid)
            _respawn(state, proc, timeout)
    return state


def _healthy_by(proc: ProcInfo, deadline: float) -> bool:
    check = health_check(proc)
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _respawn(state: StackState, info: ProcInfo, timeout: float) -> None:
    """Start a process again exactly as recorded (same ports, data and log files)."""
    if not info.argv:
        raise ServerError(
            f"{info.name} was started by an older clipline that did not record how: "
            "run `clipline down`, then `clipline up`"
        )
    cwd = None if info.cwd is None else Path(info.cwd)
    proc = spawn(
        info.name, info.argv, Path(info.output), info.env, cwd, log_file=Path(info.log),
        replace_prefixes=INHERITED_PREFIXES, replace_names=INHERITED_NAMES,
    )  # fmt: skip
    try:
        wait_until(health_check(info), info.name, timeout, proc)
    except BaseException:
        stop_pid(proc.pid)
        raise
    info.pid = proc.pid
    state.save()


def restart(home: Path, name: str, timeout: float = 60.0) -> ProcInfo:
    """Stop one process of the stack and start it again as recorded; wait until it is healthy.
    The other processes keep running."""
    with _locked(home):
        state = require(home)
        proc = state.find(name)
        if state.running(proc):
            stop_pid(proc.pid)
        _respawn(state, proc, timeout)
        return proc


def down(home: Path) -> list[ProcInfo]:
    """Stop every process of the stack (services first); returns any that survived."""
    if StackState.load(home) is None:
        return []
    with _locked(home):
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

"""The embedded local stack: nats-server, SeaweedFS, the simulator and the five services.

Over 300 lines: starting, healing, restarting, scaling and stopping the stack share one record
(stack.json) and one lock; apart, each would need the other's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from clipline import admin_token, local_keys, observe, replicas, s3_key, webhook_secret
from clipline import ports as stack_ports
from clipline.auth import ADMIN, AuthDir
from clipline.private import private_dir
from clipline.replicas import parse_replica, plan, replica_name, scalable
from clipline.servers import (
    LOG_BACKUPS,
    LOG_MAX_BYTES,
    LOOPBACK,
    Proc,
    S3Server,
    ServerError,
    free_port,
    http_ok,
    nats_url_of,
    pid_alive,
    s3_ready,
    spawn,
    start_nats,
    start_nats_cluster,
    start_seaweed,
    stop_pid,
    wait_until,
)
from services.poller.settings import PollerSettings
from services.simulator.settings import SimulatorSettings
from shared.config import CommonSettings, S3Settings, UpstreamSettings
from shared.runtime import provision
from shared.settings_env import SettingsError, settings_env, settings_from
from shared.streams import MAX_PAYLOAD_BYTES

SERVICES = replicas.SERVICES
STATE_FILE = "stack.json"
LOCK_FILE = "stack.lock"
LOCAL_API_KEY = "sk-clipline-local"
DEFAULT_TENANT = "default"
BUCKET = "clipline-assets"
ALIASES = {"s3": "seaweedfs"}
# What the Python processes read from the environment they inherit. It is recorded with them, so
# a restart from another shell runs them with the same settings (and the same code). The admin
# token and the webhook secret are the exceptions: each is kept in its own file
# (clipline/admin_token.py, clipline/webhook_secret.py) and never recorded.
INHERITED_PREFIXES = ("CLIPLINE_", "OTEL_")
INHERITED_NAMES = ("PYTHONPATH",)
SECRET_NAMES = (admin_token.ENV, *webhook_secret.NAMES)
WEBHOOK_PATH = "/webhooks/videos"
WEBHOOK_URL_ENV = "CLIPLINE_SIM_WEBHOOK_URL"
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
    # Set on top of the inherited environment; holds the local S3 key: out of reprs.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    health: str = ""  # a URL that answers once the process is ready
    metrics_port: int | None = None  # where it serves /metrics for Prometheus (loopback)

    @property
    def metrics_url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics" if self.metrics_port else None

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
            metrics_port=_metrics_port(proc.env),
        )

    def log_files(self) -> list[Path]:
        """The process's own log, then its raw output when that is another file."""
        files = [Path(self.log)]
        if self.output and self.output != self.log:
            files.append(Path(self.output))
        return files


def _is_nats_node(name: str) -> bool:
    prefix, _, number = name.partition("-")
    return prefix == "nats" and number.isdigit()


def _metrics_port(env: Mapping[str, str]) -> int | None:
    value = env.get(METRICS_PORT)
    return int(value) if value else None


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
    nats_creds: str = ""
    """The admin identity's creds file: what the local CLI and the tests connect with."""
    prometheus_url: str = ""
    """Prometheus's UI and API when the stack was started with `--observe` ("" otherwise)."""
    phoenix_url: str = ""
    """Arize Phoenix's UI (and OTLP/HTTP receiver) when the stack observes with it."""
    moved_ports: dict[str, int] = field(default_factory=dict)
    """Processes whose port of the home's previous run was taken at this start: name -> that
    port (they have new ones; clipline/ports.py)."""

    @property
    def auth(self) -> AuthDir:
        return AuthDir(Path(self.home) / "auth")

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

    def replicas(self, service: str) -> dict[int, ProcInfo]:
        """The recorded replicas of `service` by number (1 is `<service>` itself)."""
        out = {}
        for proc in self.processes:
            replica = parse_replica(proc.name)
            if replica is not None and replica[0] == service:
                out[replica[1]] = proc
        return out

    def nats_nodes(self) -> list[ProcInfo]:
        """The nats-server processes: `nats`, or a cluster's `nats-1`, `nats-2`, ..."""
        return [p for p in self.processes if p.name == "nats" or _is_nats_node(p.name)]

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
    # The simulator's signed webhooks go to the first poller, which then polls only as a safety
    # net (CLIPLINE_POLL_WEBHOOK_SAFETY_SECONDS apart); False: polling alone, as before.
    webhooks: bool = True
    # Also Prometheus (scraping every process, with the rules) and, when installed, Arize
    # Phoenix (the processes export their spans to it): clipline/observe.py.
    observe: bool = False
    # nats-server processes: 1, one server (its streams and buckets at one replica); 3 (or
    # more), a cluster on loopback (`nats-1`, `nats-2`, ...) with every stream, KV bucket and
    # object store at 3 replicas: a node may die with nothing lost (docs/reliability.md).
    nats_cluster: int = 1
    # nats-server's JetStream `sync_interval` (clipline.servers.sync_interval): None, the
    # server's default (2 minutes); "always"; or a duration ("10s"). docs/reliability.md.
    nats_sync: str | None = None


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
        if (k.startswith(INHERITED_PREFIXES) or k in INHERITED_NAMES) and k not in SECRET_NAMES
    }


def _python_module(
    name: str,
    home: Path,
    env: dict[str, str],
    options: StackOptions,
    secret_env: dict[str, str] | None = None,
) -> Proc:
    """`python -m services.<name>`, logging to <home>/logs/<name>.log through shared.logs;
    `secret_env` is given to it but not recorded."""
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
    for secret in SECRET_NAMES:
        settings.pop(secret, None)  # given as a secret, or not at all: never recorded
    argv = [sys.executable, "-m", f"services.{name}"]
    return spawn(
        name, argv, logs / f"{name}.stderr", settings, home, log_file=log_file,
        replace_prefixes=INHERITED_PREFIXES, replace_names=INHERITED_NAMES, secret_env=secret_env,
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
            if options.observe and not existing.prometheus_url:
                raise ServerError(
                    f"the stack under {home} runs without --observe: `clipline down`, then "
                    "`clipline up --observe`"
                )
            nodes = len(existing.nats_nodes())
            if options.nats_cluster > 1 and nodes != options.nats_cluster:
                raise ServerError(
                    f"the stack under {home} runs {nodes} NATS server(s): `clipline down`, then "
                    f"`clipline up --nats-cluster {options.nats_cluster}`"
                )
            state = _heal(existing, options.startup_timeout)
        else:
            started: list[tuple[Proc, int | None, str]] = []
            try:
                if options.observe:
                    state = _start_observed(home, options, started)
                else:
                    state = _start(home, options, started)
            except BaseException:
                for proc, _, _ in reversed(started):
                    stop_pid(proc.pid)
                (home / STATE_FILE).unlink(missing_ok=True)
                raise
        # The local CLI's key of the default tenant (kept, or made again if gone).
        local_keys.ensure(home, local_keys.DEFAULT_TENANT, *admin_endpoint(home))
        return state


def simulator_env(
    home: Path, options: StackOptions, port: int, webhook: tuple[str, str] | None
) -> dict[str, str]:
    """The simulator's variables, from its Settings; `webhook`: (url, secret). Secrets are left
    out: they go to it as `secret_env`, never recorded."""
    values: dict[str, object] = {
        "host": LOOPBACK,
        "port": port,
        "api_key": LOCAL_API_KEY,
        "generation_seconds": options.generation_seconds,
        "queue_seconds": options.queue_seconds,
        "poll_after_ms": options.poll_after_ms,
        "asset_dir": home / "sim-assets",
        "state_dir": home / "sim-state",  # where it keeps its jobs, so they survive its restart
    }
    if webhook is not None:
        values |= {"webhook_url": webhook[0], "webhook_secret": webhook[1]}
    try:
        env = settings_env(settings_from(SimulatorSettings, values))
    except SettingsError as exc:
        raise ServerError(f"simulator: {exc}") from None
    return {name: value for name, value in env.items() if name not in SECRET_NAMES}


METRICS_PORT = "CLIPLINE_METRICS_PORT"
"""Every process of the stack serves its metrics on a loopback port of its own (shared/config.py
MetricsSettings), recorded in the state; Prometheus (`clipline up --observe`) scrapes them."""

CALLBACKS_ALLOW_PRIVATE = "CLIPLINE_CALLBACKS_ALLOW_PRIVATE"
"""intake's setting (services/intake/settings.py): the embedded stack is local, its callers too."""


def services_env(nats_url: str, s3: S3Server, sim_url: str) -> dict[str, str]:
    """What every service of the stack is told, from the Settings classes they read."""
    return settings_env(
        settings_from(CommonSettings, {"nats_url": nats_url, "http_host": LOOPBACK}),
        settings_from(
            S3Settings,
            {
                "endpoint": s3.endpoint,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
                "bucket": BUCKET,
            },
        ),
        settings_from(UpstreamSettings, {"base_url": f"{sim_url}/v1", "api_key": LOCAL_API_KEY}),
        settings_from(PollerSettings, {"poll_default_seconds": 1.0}),
    ) | {CALLBACKS_ALLOW_PRIVATE: "true"}  # caller webhooks to receivers on this machine


def _start(
    home: Path, options: StackOptions, started: list[tuple[Proc, int | None, str]]
) -> StackState:
    logs = home / "logs"
    for folder in (home, logs, home / "nats", home / "s3", home / "sim-state", home / "sim-assets"):
        private_dir(folder)  # 0700: records, prompts, assets and keys are the user's alone
    cap, backups = options.log_max_bytes, options.log_backups
    auth = AuthDir(home / "auth").init()
    if options.nats_cluster < 1:
        raise ServerError("--nats-cluster takes 1 (one server) or more nodes")
    nats_options = {
        "max_payload": MAX_PAYLOAD_BYTES, "log_max_bytes": cap, "log_backups": backups,
        "auth": auth.server_config, "admin_creds": auth.creds_file(ADMIN),
        "sync": options.nats_sync,
    }  # fmt: skip
    if options.nats_cluster == 1:
        nodes = [start_nats(home / "nats", logs, **nats_options)]  # type: ignore[arg-type]
    else:
        nodes = start_nats_cluster(
            options.nats_cluster, home / "nats", logs, options.startup_timeout, **nats_options
        )
    started.extend((node.proc, node.port, node.health) for node in nodes)
    nats_url = nats_url_of(nodes)
    # Streams and buckets are the admin identity's to make (no service may), at 3 replicas on
    # a cluster; the local CLI's tenant gets its NATS account.
    asyncio.run(_provision(nats_url, auth, min(options.nats_cluster, 3)))
    key = s3_key.for_stack(home)
    s3 = start_seaweed(home / "s3", logs, *key, log_max_bytes=cap, log_backups=backups)
    started.append((s3.proc, s3.port, s3.health))
    # The services' ports are chosen now: the simulator is told where the poller will listen.
    # The previous run's are taken again where free (an exported CLIPLINE_URL keeps working).
    taken: set[int] = set()
    chosen = stack_ports.choose(["simulator", *SERVICES], stack_ports.previous(home), taken)
    sim_port, ports = chosen.ports["simulator"], chosen.ports
    metrics_ports = {name: free_port(taken) for name in ("simulator", *SERVICES)}
    hook = None
    if options.webhooks:
        hook = webhook_secret.for_fresh_start(home, {**os.environ, **options.env})
    webhook_url = f"http://{LOOPBACK}:{ports['poller']}{WEBHOOK_PATH}"
    sim_env = simulator_env(home, options, sim_port, (webhook_url, hook) if hook else None)
    sim_env[METRICS_PORT] = str(metrics_ports["simulator"])
    sim_secret = webhook_secret.for_simulator(hook) if hook else None
    sim = _python_module("simulator", home, sim_env, options, sim_secret)
    sim_url = f"http://{LOOPBACK}:{sim_port}"
    started.append((sim, sim_port, f"{sim_url}/healthz"))
    wait_until(http_ok(f"{sim_url}/healthz"), "simulator", options.startup_timeout, sim)
    common = services_env(nats_url, s3, sim_url)
    token = {admin_token.ENV: admin_token.for_fresh_start(home, {**os.environ, **options.env})}
    for name in SERVICES:
        port = ports[name]
        own = {"http_port": port, "nats_creds": auth.creds_file(name)}
        env = {**common, **settings_env(settings_from(CommonSettings, own))}
        env[METRICS_PORT] = str(metrics_ports[name])
        secret = {**token, **(webhook_secret.for_poller(hook) if hook and name == "poller" else {})}
        proc = _python_module(name, home, env, options, secret)
        started.append((proc, port, f"http://{LOOPBACK}:{port}/healthz"))
    for proc, _, health in started[len(nodes) + 2 :]:  # after nats, seaweedfs, the simulator
        wait_until(http_ok(health), proc.name, options.startup_timeout, proc)
    state = StackState(
        home=str(home),
        nats_url=nats_url,
        nats_creds=str(auth.creds_file(ADMIN)),
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        bucket=BUCKET,
        simulator_url=sim_url,
        intake_url=f"http://{LOOPBACK}:{ports['intake']}",
        processes=[ProcInfo.of(proc, port, health) for proc, port, health in started],
        moved_ports=chosen.moved,
    )
    state.save()
    stack_ports.remember(home, chosen.ports)
    return state


def _start_observed(
    home: Path, options: StackOptions, started: list[tuple[Proc, int | None, str]]
) -> StackState:
    """`_start`, with Phoenix started first (it is slow to answer; the processes are told to
    export their spans to it) when installed, and Prometheus last, scraping every process."""
    private_dir(home)
    private_dir(home / "logs")
    observe.prometheus_binary()  # missing: said before anything starts
    binary = observe.phoenix_binary()
    # Their previous ports too where free: a trace link printed before still opens.
    before = stack_ports.previous(home)
    kept: dict[str, int] = {}
    phoenix = None
    if binary is not None:
        taken: set[int] = set()
        kept = stack_ports.choose(observe.PHOENIX_PORTS, before, taken).ports
        port, grpc_port = (kept[name] for name in observe.PHOENIX_PORTS)
        phoenix = (observe.spawn_phoenix(home, binary, port, grpc_port), port)
        started.append((*phoenix, observe.phoenix_health(port)))
        tracing = observe.tracing_env(observe.phoenix_url(port))
        options = replace(options, env={**tracing, **options.env})
    inner: list[tuple[Proc, int | None, str]] = []
    try:
        state = _start(home, options, inner)
    finally:
        started.extend(inner)
    taken = {q for p in state.processes for q in (p.port, p.metrics_port) if q}
    taken.update(kept.values())
    kept |= stack_ports.choose([observe.PROMETHEUS], before, taken).ports
    port = kept[observe.PROMETHEUS]
    observe.write_config(home, observe.targets_of(state.processes))
    prometheus = observe.spawn_prometheus(home, port)
    health = observe.prometheus_health(port)
    started.append((prometheus, port, health))
    wait_until(http_ok(health), "prometheus", options.startup_timeout, prometheus)
    state.processes.append(ProcInfo.of(prometheus, port, health))
    state.prometheus_url = f"http://{LOOPBACK}:{port}"
    if phoenix is not None:
        health = observe.phoenix_health(phoenix[1])
        # Phoenix migrates its database and loads its UI first (observe.PHOENIX_START_SECONDS).
        wait_until(
            http_ok(health),
            "phoenix",
            observe.start_timeout(observe.PHOENIX, options.startup_timeout),
            phoenix[0],
        )
        state.processes.insert(0, ProcInfo.of(phoenix[0], phoenix[1], health))
        state.phoenix_url = observe.phoenix_url(phoenix[1])
    state.save()
    stack_ports.remember(home, stack_ports.previous(home) | kept)  # `_start` wrote its own
    return state


def _reobserve(state: StackState) -> None:
    """Prometheus's scrape targets written again from the state (a replica came or went) and
    Prometheus told to read them (SIGHUP), when the stack observes."""
    for proc in state.processes:
        if proc.name == observe.PROMETHEUS:
            observe.write_config(Path(state.home), observe.targets_of(state.processes))
            if state.running(proc):
                observe.reload(proc.pid)


async def _provision(nats_url: str, auth: AuthDir, replicas: int) -> None:
    await provision(nats_url, auth.creds_file(ADMIN), replicas)
    await auth.add_tenant(nats_url, DEFAULT_TENANT)


def _heal(state: StackState, timeout: float) -> StackState:
    """Start the dead parts again (nats first, services last), then any that stay unhealthy.
    A cluster's dead nodes start together: one alone may have no quorum to be healthy with."""
    nodes = [p for p in state.nats_nodes() if not state.running(p)]
    _respawn_together(state, nodes, timeout)
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
    info.pid = _launch(state, info, timeout).pid
    state.save()


def _respawn_together(state: StackState, infos: list[ProcInfo], timeout: float) -> None:
    """`_respawn` of several at once: all started, then each waited for."""
    procs = [_launch(state, info, timeout, wait=False) for info in infos]
    for info, proc in zip(infos, procs, strict=True):
        info.pid = proc.pid
        state.save()
    for info, proc in zip(infos, procs, strict=True):
        _await_healthy(info, proc, timeout)


def _launch(state: StackState, info: ProcInfo, timeout: float, *, wait: bool = True) -> Proc:
    """Start `info`'s command as recorded (a service with the stack's admin token too); the
    process, once it is healthy (`wait`)."""
    if not info.argv:
        raise ServerError(
            f"{info.name} was started by an older clipline that did not record how: "
            "run `clipline down`, then `clipline up`"
        )
    cwd = None if info.cwd is None else Path(info.cwd)
    secret = _secrets(state, info)
    proc = spawn(
        info.name, info.argv, Path(info.output), info.env, cwd, log_file=Path(info.log),
        replace_prefixes=INHERITED_PREFIXES, replace_names=INHERITED_NAMES, secret_env=secret,
    )  # fmt: skip
    if wait:
        _await_healthy(info, proc, timeout)
    return proc


def _await_healthy(info: ProcInfo, proc: Proc, timeout: float) -> None:
    try:
        wait_until(health_check(info), info.name, observe.start_timeout(info.name, timeout), proc)
    except BaseException:
        stop_pid(proc.pid)
        raise


def _secrets(state: StackState, info: ProcInfo) -> dict[str, str] | None:
    """What a process is given unrecorded when it starts again: a service the admin token; the
    poller and the simulator the webhook secret, when the stack was started with webhooks (its
    simulator's recorded environment names the poller's URL)."""
    home = Path(state.home)
    sends = any(p.name == "simulator" and WEBHOOK_URL_ENV in p.env for p in state.processes)
    hook = webhook_secret.read(home) if sends else None
    if info.name == "simulator":
        return webhook_secret.for_simulator(hook) if hook else None
    replica = parse_replica(info.name)
    if replica is None:
        return None
    secret = {admin_token.ENV: admin_token.kept(home)}
    if replica[0] == "poller" and hook:
        secret |= webhook_secret.for_poller(hook)
    return secret


def restart(home: Path, name: str, timeout: float = 60.0) -> ProcInfo:
    """Stop one process of the stack and start it again as recorded; wait until it is healthy.
    The other processes keep running."""
    with _locked(home):
        state = require(home)
        proc = state.find(name)
        if state.running(proc):
            stop_pid(proc.pid)
        if proc.name == observe.PROMETHEUS:
            _reobserve(state)  # the configuration it starts with is the stack's of now
        _respawn(state, proc, timeout)
        _reobserve(state)
        return proc


@dataclass(frozen=True)
class Scaled:
    """What `scale` did: the service's replica count now, the replicas started and stopped."""

    service: str
    replicas: int
    started: list[ProcInfo]
    stopped: list[ProcInfo]


def scale(
    home: Path, service: str, n: int, timeout: float = 60.0, stop_timeout: float = 10.0
) -> Scaled:
    """Run `n` replicas of `service`: start `<service>-<k>` up to n, each on its own free port
    with its own logs and otherwise the first replica's recorded command and environment, and
    wait until it is healthy; or stop those above n, highest first (SIGTERM, SIGKILL after
    `stop_timeout`). Each change is recorded at once, so `up` keeps the count after a crash."""
    scalable(service)
    if n < 1:
        raise ServerError(f"{service} runs at least 1 replica (`clipline down` stops the stack)")
    with _locked(home):
        state = require(home)
        have = state.replicas(service)
        if 1 not in have:
            raise ServerError(f"no {service} recorded under {home}: run `clipline up`")
        todo = plan(have.keys(), n)
        stopped = []
        for k in todo.stop:
            proc = have[k]
            if state.running(proc):  # a dead one's PID may be another program's by now
                stop_pid(proc.pid, stop_timeout)
                if state.running(proc):
                    raise ServerError(f"{proc.name} (pid {proc.pid}) did not stop")
            state.processes.remove(proc)
            state.save()
            stopped.append(proc)
        try:
            started = [_add_replica(state, have[1], k, timeout) for k in todo.start]
        finally:
            _reobserve(state)
        return Scaled(service, len(state.replicas(service)), started, stopped)


def _add_replica(state: StackState, first: ProcInfo, k: int, timeout: float) -> ProcInfo:
    """Start replica `k` of `first`'s service (`first` is replica 1, named as the service) and
    record it after the service's others."""
    name = replica_name(first.name, k)
    logs = Path(state.home) / "logs"
    taken = {q for p in state.processes for q in (p.port, p.metrics_port) if q}  # the dead's too
    port = free_port(taken)
    metrics_port = free_port(taken | {port})
    log_file = logs / f"{name}.log"
    info = ProcInfo(
        name=name,
        pid=0,
        port=port,
        log=str(log_file),
        output=str(logs / f"{name}.stderr"),
        argv=first.argv,
        env={
            **first.env, "CLIPLINE_HTTP_PORT": str(port), "CLIPLINE_LOG_FILE": str(log_file),
            METRICS_PORT: str(metrics_port),
        },
        cwd=first.cwd,
        health=f"http://{LOOPBACK}:{port}/healthz",
        metrics_port=metrics_port,
    )  # fmt: skip
    info.pid = _launch(state, info, timeout).pid
    last = max(state.processes.index(p) for p in state.replicas(first.name).values())
    state.processes.insert(last + 1, info)
    state.save()
    return info


def admin_endpoint(home: Path) -> tuple[str, str]:
    """(base URL of the first healthy pricing_guard replica, "http://127.0.0.1:<port>", the
    stack's admin token): where a command reaches the admin API (/v1/admin/) of the running
    stack. ServerError when no stack is up or no pricing_guard replica is healthy."""
    state = require(home)
    token = admin_token.read(home)
    if token is None:
        raise ServerError(
            f"the stack under {home} has no admin token (started by an older clipline): "
            "run `clipline down`, then `clipline up`"
        )
    for _, proc in sorted(state.replicas("pricing_guard").items()):
        if proc.port and state.running(proc) and health_check(proc)():
            return f"http://{LOOPBACK}:{proc.port}", token
    raise ServerError(
        f"no pricing_guard replica is healthy under {home}: "
        "`clipline status` shows the stack, `clipline up` starts what is down"
    )


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

"""Start, probe and stop the real servers (nats-server, SeaweedFS) and our own processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clipline import seaweed_security
from clipline.auth import ADMIN, AuthDir
from clipline.private import write_private

LOOPBACK = "127.0.0.1"
# Raw stdout/stderr of a process is kept whole while it runs (the process holds the file open);
# at each (re)start a larger file is moved aside to `<file>.1`, so at most two are kept.
OUTPUT_KEEP_BYTES = 1024 * 1024
# The servers' own log files: rotated at this size, with this many older files kept.
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3


class ServerError(RuntimeError):
    """A server binary is missing, or a process did not become healthy in time."""


def free_port(avoid: set[int] | None = None) -> int:
    """A currently free loopback TCP port (below 55000, so port+10000 gRPC offsets stay valid),
    not in `avoid` and not 10000 from one of them; it and its offset are added to `avoid`."""
    avoid = set() if avoid is None else avoid
    for _ in range(200):
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = int(s.getsockname()[1])
        # Neither it nor its gRPC offset may be one of `avoid` or an offset of one: SeaweedFS
        # refuses a port that is another of its ports + 10000 ("reserved for gRPC").
        if port < 55000 and not {port, port + 10000} & avoid and _is_free(port + 10000):
            avoid.update({port, port + 10000})
            return port
    raise ServerError("no free loopback port found")


def kept_port(port: int | None, avoid: set[int]) -> int | None:
    """`port` again, when it is free now and passes free_port's rules against `avoid` (it and
    its offset are then added to `avoid`); None otherwise."""
    if port is None or not 0 < port < 55000 or {port, port + 10000} & avoid:
        return None
    if not _is_free(port, reuse=True) or not _is_free(port + 10000):
        return None
    avoid.update({port, port + 10000})
    return port


def _is_free(port: int, *, reuse: bool = False) -> bool:
    """Nothing listens on `port`; `reuse`: connections of a process just stopped, in
    TIME_WAIT, do not count (the servers bind with SO_REUSEADDR, as this check then does)."""
    with socket.socket() as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def binary(name: str) -> str:
    """Path of a server binary installed into this environment (venv bin/ first)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name} not found: run `make install` (it comes from PyPI)")
    return found


@dataclass
class Proc:
    """A process we started in its own session, so stopping it takes its children too.

    `log_path` gets its raw stdout/stderr; `log_file`, when set, is the log the process writes
    itself (size-capped); `argv`, `env` (what was set on top of the inherited environment) and
    `cwd` are what it takes to start it again.
    """

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]
    env: dict[str, str]
    cwd: Path | None = None
    log_file: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    *,
    log_file: Path | None = None,
    replace_prefixes: tuple[str, ...] = (),
    replace_names: tuple[str, ...] = (),
    secret_env: Mapping[str, str] | None = None,
) -> Proc:
    """Start `argv` in its own session, output appended to `log_path`. The environment is this
    process's, minus `replace_names` and variables starting with `replace_prefixes` (so a
    recorded environment is reproduced exactly, not mixed with the calling shell's), plus
    `env`, plus `secret_env`: given to the process but left out of `Proc.env`, so it is never
    recorded with it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base = {
        k: v
        for k, v in os.environ.items()
        if not (replace_prefixes and k.startswith(replace_prefixes)) and k not in replace_names
    }
    roll_over(log_path, OUTPUT_KEEP_BYTES)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**base, **(env or {}), **(secret_env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(name, popen, log_path, list(argv), dict(env or {}), cwd, log_file)


def roll_over(path: Path, keep_bytes: int) -> None:
    """Move `path` aside to `<path>.1` (replacing an older one) when it is over `keep_bytes`."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > keep_bytes:
            path.replace(path.with_name(path.name + ".1"))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def wait_until(
    check: Callable[[], bool], what: str, timeout: float, proc: Proc | None = None
) -> None:
    """Poll `check` until it is true; fail early with the log tail if `proc` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise ServerError(f"{what}: process exited ({proc.popen.returncode})\n{tail(proc)}")
        if check():
            return
        time.sleep(0.1)
    raise ServerError(f"{what}: not healthy after {timeout:.0f}s\n{tail(proc) if proc else ''}")


def tail(proc: Proc, lines: int = 30) -> str:
    """The last lines of the process's own log and of its raw output (a crash's traceback)."""
    out = []
    for path in (proc.log_file, proc.log_path):
        if path is None:
            continue
        try:
            out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            continue
    return "\n".join(out)


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 400
        except httpx.HTTPError:
            return False

    return check


def s3_ready(url: str) -> Callable[[], bool]:
    """SeaweedFS's S3 gateway: an unsigned request gets 403 once the gateway and its IAM are up."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code in (200, 403)
        except httpx.HTTPError:
            return False

    return check


@dataclass(frozen=True)
class NatsServer:
    proc: Proc
    port: int
    monitor_port: int
    creds: str | None = None
    """The admin identity's creds file (streams, buckets, everything), when auth is on."""
    cluster: bool = False
    """A node of a cluster: healthy only once its JetStream has caught up with the others."""

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def health(self) -> str:
        # A node of a cluster is healthy when JetStream has a meta leader and its streams and
        # consumers are current (nats-server's full /healthz); one server when JetStream is on.
        check = "" if self.cluster else "?js-enabled-only=true"
        return f"http://{LOOPBACK}:{self.monitor_port}/healthz{check}"


SYNC_ALWAYS = "always"
SYNC_INTERVAL_ENV = "CLIPLINE_NATS_SYNC_INTERVAL"
"""The embedded stack's nats-server `sync_interval` (docs/reliability.md): unset for the
server's default (2 minutes), `always`, or a duration (`10s`, `500ms`, `1m`)."""
_DURATION = re.compile(r"[1-9][0-9]*(ms|s|m|h)")


def sync_interval(value: str | None) -> str | None:
    """A valid `sync_interval` (None: the server's default), or a ServerError saying which are."""
    if value is None or value.strip() == "" or value.strip().lower() == "default":
        return None
    value = value.strip().lower()
    if value == SYNC_ALWAYS or _DURATION.fullmatch(value):
        return value
    raise ServerError(
        f"invalid NATS sync interval {value!r}: `always`, `default`, or a duration such as "
        "10s, 500ms, 2m"
    )


@dataclass(frozen=True)
class Routes:
    """How the nodes of a cluster reach each other: their route ports on loopback and the
    secret a node needs to join (no other process on the machine may join as a route)."""

    name: str
    ports: list[int]
    user: str = "route"
    password: str = field(default="", repr=False)

    def block(self, port: int) -> str:
        peers = [
            f"nats-route://{self.user}:{self.password}@{LOOPBACK}:{p}"
            for p in self.ports
            if p != port
        ]
        return (
            "cluster {\n"
            f"  name: {json.dumps(self.name)}\n"
            f"  listen: {json.dumps(f'{LOOPBACK}:{port}')}\n"
            f"  authorization {{ user: {json.dumps(self.user)}, "
            f"password: {json.dumps(self.password)} }}\n"
            f"  routes: {json.dumps(peers)}\n"
            "}\n"
        )


def start_nats(
    data_dir: Path,
    log_dir: Path,
    timeout: float = 30.0,
    max_payload: int = 8 * 1024 * 1024,
    *,
    log_max_bytes: int = LOG_MAX_BYTES,
    log_backups: int = LOG_BACKUPS,
    auth: Path | None = None,
    admin_creds: Path | None = None,
    sync: str | None = None,
    name: str = "nats",
    route: tuple[Routes, int] | None = None,
    wait: bool = True,
) -> NatsServer:
    """nats-server with JetStream on loopback; `max_payload` lets a request carry an image.
    `auth`: its operator-mode settings (clipline.auth's `nats-auth.conf`), so every client
    needs an identity; `admin_creds` is then what the caller connects with. `sync`: its
    JetStream `sync_interval` (None: the server's default). `route`: a node of a cluster
    (`start_nats_cluster`), its routes and its own route port; `name` is then the node's.
    `wait`: return once it is healthy.

    It writes its own log to `<log_dir>/<name>.log`, rotated by size (`logfile_size_limit`) with
    `log_backups` older files kept; stdout/stderr (a crash) go to `<name>.stderr`.
    """
    port, monitor = free_port(), free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{name}.log"
    config = data_dir.parent / f"{name}-{port}.conf"
    sync = sync_interval(sync)
    write_private(  # 0600 from the start: with auth it holds the accounts' settings
        config,
        f"max_payload: {max_payload}\n"
        # A service's user JWT lists its permissions and rides in its CONNECT line.
        "max_control_line: 65536\n"
        f"log_file: {json.dumps(str(log_file))}\n"
        f"logfile_size_limit: {max(log_max_bytes, 1024)}\n"
        f"logfile_max_num: {log_backups + 1}\n"  # the current file counts
        + ("" if sync is None else f"jetstream {{ sync_interval: {json.dumps(sync)} }}\n")
        + ("" if route is None else route[0].block(route[1]))
        + ("" if auth is None else auth.read_text()),
    )
    server_name = f"clipline-{port}" if route is None else name
    argv = [
        binary("nats-server"), "-c", str(config),
        "-a", LOOPBACK, "-p", str(port), "-m", str(monitor),
        "-js", "-sd", str(data_dir), "--server_name", server_name,
    ]  # fmt: skip
    proc = spawn(name, argv, log_dir / f"{name}.stderr", log_file=log_file)
    server = NatsServer(
        proc, port, monitor, None if admin_creds is None else str(admin_creds), route is not None
    )
    if wait:
        wait_until(http_ok(server.health), name, timeout, proc)
    return server


def start_nats_cluster(
    nodes: int, data_dir: Path, log_dir: Path, timeout: float = 60.0, **options: Any
) -> list[NatsServer]:
    """`nodes` nats-servers on loopback routed to each other as one JetStream cluster
    (`nats-1`, `nats-2`, ...; data under `<data_dir>/<name>`), each started as `start_nats`
    with `options`; returned once every node is healthy (a meta leader chosen). A client may
    connect to any of them (`nats_servers` of the comma-joined URLs)."""
    if nodes < 2:
        raise ServerError("a NATS cluster has at least 2 nodes (3 for a quorum that survives one)")
    routes = Routes("clipline", [free_port() for _ in range(nodes)], password=secrets.token_hex(16))
    started: list[NatsServer] = []
    try:
        for i, port in enumerate(routes.ports, start=1):
            name = f"nats-{i}"
            node = start_nats(
                data_dir / name, log_dir, timeout, name=name, route=(routes, port), wait=False,
                **options,
            )  # fmt: skip
            started.append(node)
        for node in started:
            wait_until(http_ok(node.health), node.proc.name, timeout, node.proc)
    except BaseException:
        for node in started:
            stop_pid(node.proc.pid)
        raise
    return started


def nats_url_of(servers: Sequence[NatsServer]) -> str:
    """One CLIPLINE_NATS_URL naming every server (shared.config.nats_servers splits it)."""
    return ",".join(server.url for server in servers)


def start_secured_nats(root: Path, **options: Any) -> tuple[NatsServer, AuthDir]:
    """nats-server as `clipline up` runs it: identities under `<root>/auth`, data under
    `<root>/data`, logs in `root`; provisioned (stream, buckets) with the admin identity."""
    from shared.runtime import provision  # noqa: PLC0415 - the services' runtime, only here

    auth = AuthDir(root / "auth").init()
    server = start_nats(
        root / "data", root, auth=auth.server_config, admin_creds=auth.creds_file(ADMIN),
        **options,
    )  # fmt: skip
    try:
        asyncio.run(provision(server.url, auth.creds_file(ADMIN)))
    except BaseException:
        stop_pid(server.proc.pid)
        raise
    return server, auth


@dataclass(frozen=True)
class S3Server:
    proc: Proc
    port: int
    access_key: str
    secret_key: str = field(repr=False)
    # Every port it listens on by role (master, volume, filer, s3, admin); gRPC is +10000.
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def health(self) -> str:
        return f"http://{self.endpoint}/"


def new_s3_key() -> tuple[str, str]:
    """A fresh random S3 key pair (access key, secret key)."""
    return "CL" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)


def start_seaweed(
    data_dir: Path,
    log_dir: Path,
    access_key: str,
    secret_key: str,
    timeout: float = 60.0,
    *,
    log_max_bytes: int = LOG_MAX_BYTES,
    log_backups: int = LOG_BACKUPS,
) -> S3Server:
    """SeaweedFS `weed mini` on loopback, every port chosen free, telemetry off, reachable only
    through authenticated S3 with the given key (there is no default one).

    Locked down (clipline/seaweed_security.py writes its secrets; tests/security/
    test_s3_files.py proves each): the S3 gateway knows one identity, from a 0600
    `-s3.config` file; `-disableHttp` closes the filer's HTTP API and the master's (assign,
    submit, collection delete...; its status page remains); the volume server's HTTP port reads
    and writes only with a token signed by a key in the 0600 security.toml, which also puts
    every gRPC port behind mutual TLS. The data folder is 0700. The AWS_* variables a shell
    may export are blanked so they add no identity.

    Its glog files go to `<log_dir>/seaweedfs/` (`weed.INFO` is the current one), rotated by
    size in whole MiB (glog's unit, so at least 1 MiB); stdout/stderr (the start-up banner, a
    crash) go to `seaweedfs.stderr`.
    """
    used: set[int] = set()
    p = {k: free_port(used) for k in ("master", "volume", "filer", "s3", "admin")}
    if not access_key or not secret_key:
        raise ServerError("SeaweedFS needs an S3 access key and secret key (there is no default)")
    data_dir = data_dir.resolve()
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("openssl not found: the embedded SeaweedFS needs it for its TLS keys")
    try:
        seaweed_security.write(data_dir, access_key, secret_key, openssl)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerError(f"cannot write SeaweedFS's keys into {data_dir}: {exc}") from None
    glog_dir = log_dir / "seaweedfs"
    glog_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary("weed"), f"-logdir={glog_dir}", "-alsologtostderr=false",
        f"-log_max_size_mb={max(1, -(-log_max_bytes // (1024 * 1024)))}",
        f"-log_max_files={log_backups + 1}",
        "mini", f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-master.port={p['master']}", f"-volume.port={p['volume']}",
        f"-filer.port={p['filer']}", f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
        "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-disableHttp",
        f"-s3.config={data_dir / seaweed_security.S3_CONFIG_FILE}",
        f"-filer.localSocket={data_dir}/filer.sock", f"-s3.localSocket={data_dir}/s3.sock",
    ]  # fmt: skip
    # Recorded with the process (so a restart blanks them too); no secret in them.
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    proc = spawn(
        "seaweedfs", argv, log_dir / "seaweedfs.stderr", env=env, cwd=data_dir,
        log_file=glog_dir / "weed.INFO",
    )  # fmt: skip
    server = S3Server(proc, p["s3"], access_key, secret_key, p)
    wait_until(s3_ready(server.health), "seaweedfs s3", timeout, proc)
    return server

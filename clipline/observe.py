"""`clipline up --observe`: Prometheus scraping every process of the stack, Arize Phoenix as the
trace UI the processes export their spans to; both on loopback ports, their data under the home.

Prometheus is Debian's package (`make system-deps`); Phoenix is an optional extra in a venv of
its own (`make observe`, .venv-observe): without it the stack observes with Prometheus alone
and says how to add Phoenix. The scrape configuration is generated from the stack state, so a
replica `clipline scale` adds is scraped too (the file is written again and Prometheus told
with SIGHUP).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

from clipline.private import private_dir, write_private
from clipline.servers import LOOPBACK, Proc, ServerError, spawn

REPO = Path(__file__).resolve().parent.parent
RULES_FILE = REPO / "deploy" / "prometheus" / "clipline-rules.yml"
"""Recording and alert rules; compose's Prometheus loads the same file."""
OBSERVE_VENV = REPO / ".venv-observe"
PHOENIX_ENV = "CLIPLINE_PHOENIX"
"""The `arize-phoenix` executable to run (default: .venv-observe's, then one on PATH)."""
PROMETHEUS_ENV = "CLIPLINE_PROMETHEUS"
"""The `prometheus` executable to run (default: the one on PATH, Debian's /usr/bin/prometheus)."""
TRACE_URL_ENV = "CLIPLINE_TRACE_URL"
"""A template of a trace's page in a trace UI, `{trace_id}` replaced: `clipline submit` prints
it with the job's trace id (otherwise a local stack's Phoenix is used, when it runs one)."""
INSTALL_PHOENIX = "run `make observe` to install Arize Phoenix (the trace UI) into .venv-observe"

PROMETHEUS = "prometheus"
PHOENIX = "phoenix"
OBSERVERS = (PHOENIX, PROMETHEUS)
PHOENIX_PORTS = (PHOENIX, "phoenix-grpc")
"""Names of Phoenix's ports (UI and OTLP/HTTP; OTLP/gRPC) in the stack's kept ports."""
SCRAPE_SECONDS = 5
"""Scrape and rule-evaluation interval: a local stack's alerts and graphs move within seconds."""
EXPORT_DELAY_MS = 1000
"""OTEL_BSP_SCHEDULE_DELAY of the stack's processes: a finished span reaches Phoenix within a
second (the SDK's default is 5 s)."""
RETENTION = "2d"


def phoenix_binary() -> str | None:
    """The Phoenix server to run, or None when the observe extra is not installed."""
    chosen = os.environ.get(PHOENIX_ENV)
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise ServerError(f"{PHOENIX_ENV}={chosen} is not an executable file")
        return chosen
    own = OBSERVE_VENV / "bin" / "arize-phoenix"
    if own.exists():
        return str(own)
    return shutil.which("arize-phoenix")


def prometheus_binary() -> str:
    chosen = os.environ.get(PROMETHEUS_ENV) or shutil.which("prometheus")
    if not chosen:
        raise ServerError(
            "prometheus not found: `make system-deps` installs Debian's package "
            "(apt-get install prometheus)"
        )
    return chosen


def phoenix_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def trace_link(phoenix: str, trace_id: str) -> str:
    """Phoenix's page of one trace (its /redirects/traces/ route finds the trace's project)."""
    return f"{phoenix.rstrip('/')}/redirects/traces/{trace_id}"


def tracing_env(phoenix: str) -> dict[str, str]:
    """What the simulator and the services are told so their spans go to Phoenix (OTLP/HTTP,
    /v1/traces under this base)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": str(EXPORT_DELAY_MS),
    }


def spawn_phoenix(home: Path, binary: str, port: int, grpc_port: int) -> Proc:
    """Start Phoenix (it takes 10 to 30 s to answer: the caller waits on its /healthz later)."""
    work = private_dir(home / PHOENIX)
    env = {
        "PHOENIX_HOST": LOOPBACK,
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",  # no usage reports leave the machine
        "PHOENIX_LOGGING_LEVEL": "warning",  # not a line per OTLP post and health check
        # Phoenix must not trace itself into the stack's collector.
        "OTEL_SDK_DISABLED": "true",
    }
    logs = home / "logs"
    return spawn(PHOENIX, [binary, "serve"], logs / "phoenix.log", env, work)


PHOENIX_START_SECONDS = 180.0
"""Phoenix migrates its database and loads its UI before it answers: 10 s on an idle machine,
over a minute on a busy one."""


def start_timeout(name: str, timeout: float) -> float:
    """How long `name` may take to become healthy when `timeout` is the stack's wait."""
    return max(timeout, PHOENIX_START_SECONDS) if name == PHOENIX else timeout


def phoenix_health(port: int) -> str:
    return f"{phoenix_url(port)}/healthz"


def prometheus_health(port: int) -> str:
    return f"http://{LOOPBACK}:{port}/-/ready"


def config_path(home: Path) -> Path:
    return home / PROMETHEUS / "prometheus.yml"


def scrape_config(targets: Iterable[tuple[str, int]], rules: Path | None = RULES_FILE) -> str:
    """Prometheus's configuration (JSON is YAML): every (process name, metrics port) scraped
    as one target of job `clipline`, labelled `process`; the rules file when it exists."""
    config: dict[str, object] = {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_SECONDS - 1}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
            "external_labels": {"stack": "embedded"},
        },
        "scrape_configs": [
            {
                "job_name": "clipline",
                "static_configs": [
                    {"targets": [f"{LOOPBACK}:{port}"], "labels": {"process": name}}
                    for name, port in targets
                ],
            }
        ],
    }
    if rules is not None and rules.exists():
        config["rule_files"] = [str(rules)]
    return json.dumps(config, indent=2) + "\n"


def write_config(home: Path, targets: Iterable[tuple[str, int]]) -> Path:
    path = config_path(home)
    write_private(path, scrape_config(targets))  # renamed into place: never read half written
    return path


def spawn_prometheus(home: Path, port: int) -> Proc:
    """Start Prometheus on loopback with the configuration `write_config` wrote; its TSDB under
    <home>/prometheus/data."""
    folder = private_dir(home / PROMETHEUS)
    argv = [
        prometheus_binary(),
        f"--config.file={config_path(home)}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--web.enable-lifecycle",  # POST /-/reload, as SIGHUP
    ]
    return spawn(PROMETHEUS, argv, home / "logs" / "prometheus.log", {}, folder)


def reload(pid: int) -> None:
    """Tell Prometheus to read its configuration again (SIGHUP)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGHUP)


def targets_of(processes: Iterable[object]) -> list[tuple[str, int]]:
    """(name, metrics port) of every process that serves /metrics."""
    out = []
    for proc in processes:
        port = getattr(proc, "metrics_port", None)
        if port:
            out.append((str(getattr(proc, "name", "")), int(port)))
    return out


def describe_missing_phoenix(env: Mapping[str, str]) -> str:
    where = env.get(PHOENIX_ENV) or str(OBSERVE_VENV / "bin" / "arize-phoenix")
    return f"Arize Phoenix is not installed ({where} not found): {INSTALL_PHOENIX}"

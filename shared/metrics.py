"""Metrics: the catalogue of clipline's instruments (OpenTelemetry's metrics API), and one
MeterProvider per process whose readings Prometheus scrapes at /metrics on a port of its own.

Every instrument is declared here, once, with its unit and its labels: the dashboards
(deploy/grafana), the recording and alert rules (deploy/prometheus) and the tests read the same
names. The instruments are made on the API's proxy meter at import, so a module records into
them before or after its process installs a provider; without a provider (unit tests, tools)
they record nothing.

Labels stay bounded: tenant, provider, model, size, kind, state, reason, stage, endpoint,
status, durable, operation. Never a job id, a key, a URL or a secret.

Prometheus names (the exporter turns `.` into `_`, appends the unit and `_total` to counters):
the comment beside each instrument gives the name a query uses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import _Gauge as Gauge
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

from shared.config import ConfigError

log = logging.getLogger("clipline.metrics")

Labels = Mapping[str, str]

SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 1200.0, 3600.0,
)  # fmt: skip
"""Histogram buckets of durations in seconds: a millisecond step to an hour's generation."""

_meter = metrics.get_meter("clipline")


def _counter(name: str, unit: str, description: str) -> metrics.Counter:
    return _meter.create_counter(name, unit=unit, description=description)


def _seconds(name: str, description: str) -> metrics.Histogram:
    return _meter.create_histogram(
        name, unit="s", description=description,
        explicit_bucket_boundaries_advisory=list(SECONDS_BUCKETS),
    )  # fmt: skip


def _gauge(name: str, unit: str, description: str) -> Gauge:
    return _meter.create_gauge(name, unit=unit, description=description)


# --- jobs -------------------------------------------------------------------------------------
JOB_TRANSITIONS = _counter(
    "clipline.job.transitions", "{transition}",
    "Jobs moving from one lifecycle state to another, counted by the service that recorded the "
    "move. Labels: from_state, to_state, tenant, provider, model, kind, reason ('' if none).",
)  # clipline_job_transitions_total  # fmt: skip
STAGE_DURATION = _seconds(
    "clipline.stage.duration",
    "Time a job spent in a stage, recorded when it leaves it. Labels: stage (the state left), "
    "provider, model, kind.",
)  # clipline_stage_duration_seconds_{bucket,sum,count}
GENERATION_DURATION = _seconds(
    "clipline.generation.duration",
    "Upstream generation time of a finished job (created to completed/failed upstream). Labels: "
    "provider, model, size, outcome (completed, failed, timed_out).",
)  # clipline_generation_duration_seconds_{bucket,sum,count}
MESSAGES_REJECTED = _counter(
    "clipline.messages.rejected", "{message}",
    "Messages a consumer gave up on (poison at decode, error budget spent): dead letters. "
    "Labels: service, durable, reason.",
)  # clipline_messages_rejected_total  # fmt: skip

# --- money (pricing_guard) --------------------------------------------------------------------
COST_RESERVED = _counter(
    "clipline.cost.reserved_micros", "{micro-dollar}",
    "Micro-dollars reserved against budgets at admission. Labels: tenant, provider, model.",
)  # clipline_cost_reserved_micros_total  # fmt: skip
COST_SETTLED = _counter(
    "clipline.cost.settled_micros", "{micro-dollar}",
    "Micro-dollars charged at settlement. Labels: tenant, provider, model.",
)  # clipline_cost_settled_micros_total  # fmt: skip
COST_RELEASED = _counter(
    "clipline.cost.released_micros", "{micro-dollar}",
    "Micro-dollars of reservations released unspent. Labels: tenant, provider, model.",
)  # clipline_cost_released_micros_total  # fmt: skip
COST_DISPUTED = _counter(
    "clipline.cost.disputed_micros", "{micro-dollar}",
    "Micro-dollars of reservations whose outcome is unknown (held against the budget until an "
    "operator resolves them). Labels: tenant, provider, model.",
)  # clipline_cost_disputed_micros_total  # fmt: skip
BUDGET_UTILISATION = _gauge(
    "clipline.budget.utilisation_ratio",
    "1",
    "Share of a budget used (reserved + settled + disputed over the limit), as last seen by "
    "pricing_guard (each replica its own series: take the max). Labels: scope (global|tenant), "
    "tenant ('' for global), window (daily|monthly|lifetime).",
)  # clipline_budget_utilisation_ratio
BUDGET_SOFT_THRESHOLD = _gauge(
    "clipline.budget.soft_threshold_ratio",
    "1",
    "A budget's soft threshold as a share of its limit (the alert fires above it). Labels as "
    "clipline.budget.utilisation_ratio.",
)  # clipline_budget_soft_threshold_ratio
RESERVATIONS_DISPUTED = _gauge(
    "clipline.reservations.disputed",
    "{reservation}",
    "Reservations in the disputed state now. Labels: tenant.",
)  # clipline_reservations_disputed

# --- upstream (submitter, poller, storage's downloads) ------------------------------------------
UPSTREAM_REQUESTS = _counter(
    "clipline.upstream.requests", "{request}",
    "Requests to the upstream provider. Labels: provider, endpoint (create, retrieve, content, "
    "delete, remix, ...), method, status (HTTP status, or 'error' when none came back).",
)  # clipline_upstream_requests_total  # fmt: skip
UPSTREAM_DURATION = _seconds(
    "clipline.upstream.request.duration",
    "Duration of upstream requests. Labels as clipline.upstream.requests.",
)  # clipline_upstream_request_duration_seconds_{bucket,sum,count}
RATE_LIMIT_WAITS = _counter(
    "clipline.rate_limit.waits", "{wait}",
    "Creates held back by clipline's own rate shaping (or an upstream 429). Labels: provider, "
    "model, cause (shaping|upstream_429).",
)  # clipline_rate_limit_waits_total  # fmt: skip
RATE_LIMIT_WAIT = _seconds(
    "clipline.rate_limit.wait",
    "How long a held-back create waited. Labels as clipline.rate_limit.waits.",
)  # clipline_rate_limit_wait_seconds_{bucket,sum,count}

# --- poller -------------------------------------------------------------------------------------
POLLS = _counter(
    "clipline.poller.polls", "{poll}",
    "Looks at an upstream job by the poller's timers. Labels: provider, outcome (pending, "
    "throttled, ended, elsewhere, error).",
)  # clipline_poller_polls_total  # fmt: skip
WEBHOOKS = _counter(
    "clipline.poller.webhooks", "{webhook}",
    "Upstream webhooks received. Labels: provider, outcome (looked, not_followed, "
    "unknown_job, duplicate, throttled, retry, bad_signature, stale, bad_request, too_large, "
    "disabled).",
)  # clipline_poller_webhooks_total  # fmt: skip
JOBS_WAITING = _gauge(
    "clipline.poller.waiting",
    "{job}",
    "Jobs this poller follows upstream now. Labels: provider.",
)  # clipline_poller_waiting
JOBS_OVERDUE = _gauge(
    "clipline.poller.overdue",
    "{job}",
    "Jobs this poller follows that are past their expected generation time (the model's "
    "expected time plus grace): stuck upstream. Labels: provider.",
)  # clipline_poller_overdue

# --- storage ------------------------------------------------------------------------------------
S3_TRANSFERRED = _counter(
    "clipline.s3.transferred", "By",
    "Bytes written to S3. Labels: operation (put).",
)  # clipline_s3_transferred_bytes_total  # fmt: skip
S3_ERRORS = _counter(
    "clipline.s3.errors", "{error}",
    "Failed S3 requests. Labels: operation (put), reason (S3's error code, or unavailable).",
)  # clipline_s3_errors_total  # fmt: skip

# --- JetStream consumers (every service, of its own durables) -----------------------------------
CONSUMER_PENDING = _gauge(
    "clipline.consumer.pending",
    "{message}",
    "Messages of the stream not yet delivered to the durable (its backlog). Labels: service, "
    "stream, durable.",
)  # clipline_consumer_pending
CONSUMER_ACK_PENDING = _gauge(
    "clipline.consumer.ack_pending",
    "{message}",
    "Messages delivered to the durable and not yet acknowledged (in progress or held). Labels "
    "as clipline.consumer.pending.",
)  # clipline_consumer_ack_pending
CONSUMER_REDELIVERED = _gauge(
    "clipline.consumer.redelivered",
    "{message}",
    "Messages the durable has had delivered more than once (JetStream's num_redelivered). "
    "Labels as clipline.consumer.pending.",
)  # clipline_consumer_redelivered

# --- simulator ----------------------------------------------------------------------------------
SIMULATOR_REQUESTS = _counter(
    "clipline.simulator.requests", "{request}",
    "Requests the Sora 2 simulator answered. Labels: endpoint (method and path template, "
    "e.g. 'GET /v1/videos/{video_id}'; 'other' when unrouted), status.",
)  # clipline_simulator_requests_total  # fmt: skip
SIMULATOR_CREATES = _counter(
    "clipline.simulator.creates", "{video}",
    "Videos the simulator created (its accounting of paid creates). Labels: model.",
)  # clipline_simulator_creates_total  # fmt: skip


_UNIT_SUFFIX = {"s": "_seconds", "By": "_bytes", "1": "_ratio"}


def series_names(instrument: metrics.Instrument) -> set[str]:
    """The series names Prometheus sees for one instrument: `.` becomes `_`, the unit's suffix
    (`{...}` annotations add none; `_ratio` is not repeated), `_total` for counters and
    `_bucket/_sum/_count` for histograms."""
    name: str = getattr(instrument, "_name", "").replace(".", "_")
    unit: str = getattr(instrument, "_unit", "") or ""
    if unit and not (unit.startswith("{") and unit.endswith("}")):
        suffix = _UNIT_SUFFIX[unit]  # a new unit: teach this table its Prometheus suffix
        if not name.endswith(suffix):
            name += suffix
    if isinstance(instrument, metrics.Counter):
        return {f"{name}_total"}
    if isinstance(instrument, metrics.Histogram):
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def instruments() -> dict[str, metrics.Instrument]:
    """Every instrument of the catalogue, by its name in this module."""
    return {k: v for k, v in globals().items() if isinstance(v, metrics.Instrument)}


def catalogue_markdown() -> str:
    """docs/metrics.md: every instrument, its Prometheus name, kind, unit and meaning."""
    rows = [
        "# Metrics",
        "",
        "Generated from shared/metrics.py by `make schemas` (a test fails when it drifts). Every",
        "process serves these at `/metrics` on its own listener (`CLIPLINE_METRICS_HOST`,",
        "`CLIPLINE_METRICS_PORT`), never on its API port. A series appears once something was",
        "recorded under its labels. Labels never hold a job id, a URL, a key or a secret.",
        "",
        "| Prometheus name | kind | unit | what it counts |",
        "|---|---|---|---|",
    ]
    for instrument in instruments().values():
        kind = type(instrument).__name__.lstrip("_").removeprefix("Proxy").lower()
        base = min(series_names(instrument), key=len)
        if isinstance(instrument, metrics.Histogram):
            base = base.removesuffix("_sum") + "_{bucket,sum,count}"
        unit = getattr(instrument, "_unit", "")
        text = " ".join(getattr(instrument, "_description", "").split()).replace("|", "\\|")
        rows.append(f"| `{base}` | {kind} | `{unit}` | {text} |")
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class MetricsServer:
    """The process's /metrics listener (a thread of prometheus_client's)."""

    host: str
    port: int
    _server: Any

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def make_meter_provider(service: str) -> MeterProvider:
    """A provider tagged with `service.name` whose readings go to prometheus_client's registry
    (read at each scrape: nothing is pushed, nothing runs between scrapes)."""
    resource = Resource.create({"service.name": service})
    return MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])


def install(provider: MeterProvider) -> None:
    """Make `provider` the global one. Only a process entry point calls this."""
    metrics.set_meter_provider(provider)


def serve(host: str, port: int) -> MetricsServer:
    """Serve GET /metrics (Prometheus text) on host:port from a daemon thread (port 0: any free
    one). A scrape reads the SDK's aggregations; it never waits on the event loop."""
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    log.info("metrics: serving /metrics on %s:%d", host, bound)
    return MetricsServer(host, int(bound), server)


_lock = threading.Lock()
_started: list[MetricsServer] = []


def start(service: str, host: str, port: int | None) -> MetricsServer | None:
    """A process's metrics set-up: install the provider and serve /metrics, when a port is set
    (CLIPLINE_METRICS_PORT); without one, nothing (the instruments record into the no-op
    provider). Once per process."""
    if port is None:
        return None
    with _lock:
        if _started:
            return _started[0]
        try:
            server = serve(host, port)
        except OSError as exc:
            raise ConfigError(
                f"configuration error: CLIPLINE_METRICS_PORT: cannot listen on {host}:{port}: "
                f"{exc.strerror or exc}"
            ) from None
        install(make_meter_provider(service))
        _started.append(server)
        return server


def enabled() -> bool:
    """Does this process serve metrics (so readings worth a NATS request are taken)?"""
    return bool(_started)

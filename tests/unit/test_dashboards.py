"""Grafana's dashboards and data sources (deploy/grafana/): valid JSON, provisioned data sources,
and only metrics that exist: clipline's from shared/metrics.py's catalogue, NATS's from
prometheus-nats-exporter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clipline.servers import free_port
from shared import metrics
from tests.support.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

# prometheus-nats-exporter 0.18.0 (the image compose pins): JetStream names from
# collector/jsz.go, `gnatsd_varz_*` from the fields of NATS's /varz it flattens (as its own
# walkthrough dashboards use them). The NATS dashboard may use these and no others.
NATS_EXPORTER_METRICS = frozenset(
    {
        "gnatsd_varz_connections", "gnatsd_varz_subscriptions", "gnatsd_varz_slow_consumers",
        "gnatsd_varz_in_msgs", "gnatsd_varz_out_msgs", "gnatsd_varz_in_bytes",
        "gnatsd_varz_out_bytes", "gnatsd_varz_cpu", "gnatsd_varz_mem",
        "gnatsd_varz_jetstream_stats_storage", "gnatsd_varz_jetstream_stats_memory",
        "jetstream_server_total_streams", "jetstream_server_total_consumers",
        "jetstream_server_total_messages", "jetstream_server_total_message_bytes",
        "jetstream_stream_total_messages", "jetstream_stream_total_bytes",
        "jetstream_stream_first_seq", "jetstream_stream_last_seq",
        "jetstream_stream_consumer_count", "jetstream_consumer_num_pending",
        "jetstream_consumer_num_ack_pending", "jetstream_consumer_num_redelivered",
        "jetstream_consumer_num_waiting", "jetstream_consumer_delivered_stream_seq",
        "jetstream_consumer_delivered_consumer_seq", "jetstream_consumer_ack_floor_stream_seq",
        "jetstream_account_storage_used", "jetstream_account_memory_used",
    }
)  # fmt: skip


def catalogue() -> set[str]:
    return set().union(*(metrics.series_names(i) for i in metrics.instruments().values()))


def dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus query, and the metric of each variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel["title"], target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        found = re.fullmatch(r"label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)", text)
        assert found, f"variable {variable['name']}: only label_values(metric, label) is used"
        yield f"variable {variable['name']}", found.group(1)


def provisioned_datasources() -> dict[str, str]:
    uids: dict[str, str] = {}
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml")):
        for source in yaml.safe_load(path.read_text())["datasources"]:
            uids[source["uid"]] = source["type"]
    return uids


def test_there_are_the_two_dashboards() -> None:
    titles = {dashboard(p)["title"]: dashboard(p)["uid"] for p in DASHBOARDS}
    assert titles == {"clipline overview": "clipline-overview", "NATS / JetStream": "clipline-nats"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_is_valid_json_with_uid_title_and_placed_panels(path: Path) -> None:
    board = dashboard(path)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])  # Grafana's uid limit
    assert board["title"].strip()
    assert board["panels"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(board):
        assert panel["title"].strip(), panel
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] > 0, panel["title"]
        if panel["type"] not in ("row", "text"):
            assert panel.get("targets"), f"{panel['title']}: no query"


def test_the_dashboards_have_distinct_uids() -> None:
    uids = [dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_datasource_a_dashboard_names_is_provisioned_with_its_type(path: Path) -> None:
    provisioned = provisioned_datasources()
    board = dashboard(path)
    named = [(p["title"], p["datasource"]) for p in panels(board) if "datasource" in p]
    named += [
        (p["title"], t["datasource"])
        for p in panels(board)
        for t in p.get("targets", [])
        if "datasource" in t
    ]
    named += [
        (v["name"], v["datasource"]) for v in board["templating"]["list"] if "datasource" in v
    ]
    assert named
    for title, source in named:
        assert source["uid"] in provisioned, f"{title}: data source {source} not provisioned"
        assert source["type"] == provisioned[source["uid"]], title
    for panel in panels(board):
        if panel["type"] not in ("row", "text"):
            assert "datasource" in panel, f"{panel['title']}: no data source (Grafana's default)"


def test_the_datasources_are_prometheus_and_jaeger_inside_the_network() -> None:
    sources = {
        s["uid"]: s
        for p in (GRAFANA / "provisioning" / "datasources").glob("*.yml")
        for s in yaml.safe_load(p.read_text())["datasources"]
    }
    assert sources["clipline-prometheus"]["url"] == "http://prometheus:9090"
    assert sources["clipline-jaeger"]["url"] == "http://jaeger:16686"
    assert all(s["editable"] is False for s in sources.values())


def test_the_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    [provider] = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "clipline.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in compose


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_clipline_metric_a_dashboard_uses_is_in_the_catalogue(path: Path) -> None:
    known = catalogue()
    used = 0
    for title, expr in expressions(dashboard(path)):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        for name in names:
            if name.startswith("clipline_"):
                used += 1
                assert name in known, f"{title}: {name} is not in shared/metrics.py"
            else:
                assert name in NATS_EXPORTER_METRICS, f"{title}: {name} is not a known metric"
    assert used or path.name == "nats-jetstream.json"


def test_the_overview_covers_what_an_operator_asks() -> None:
    used: set[str] = set()
    for _, expr in expressions(dashboard(GRAFANA / "dashboards" / "clipline-overview.json")):
        used |= metric_names(expr)
    for name in (
        "clipline_job_transitions_total", "clipline_consumer_pending",
        "clipline_consumer_ack_pending", "clipline_generation_duration_seconds_bucket",
        "clipline_stage_duration_seconds_bucket", "clipline_cost_settled_micros_total",
        "clipline_budget_utilisation_ratio", "clipline_budget_soft_threshold_ratio",
        "clipline_upstream_requests_total", "clipline_reservations_disputed",
        "clipline_cost_disputed_micros_total", "clipline_upstream_request_duration_seconds_bucket",
        "clipline_s3_transferred_bytes_total", "clipline_s3_errors_total",
        "clipline_poller_waiting", "clipline_poller_overdue", "clipline_simulator_creates_total",
    ):  # fmt: skip
        assert name in used, name
    exprs = [
        e for _, e in expressions(dashboard(GRAFANA / "dashboards" / "clipline-overview.json"))
    ]
    assert any('status="429"' in e for e in exprs)
    assert any("/ 1e6" in e and "clipline_cost_settled_micros_total" in e for e in exprs)


def test_the_nats_dashboard_reads_jetstream_consumers_and_streams() -> None:
    used: set[str] = set()
    for _, expr in expressions(dashboard(GRAFANA / "dashboards" / "nats-jetstream.json")):
        used |= metric_names(expr)
    assert {"jetstream_consumer_num_pending", "jetstream_stream_total_messages"} <= used
    assert any(name.startswith("gnatsd_varz_") for name in used)


def test_the_catalogue_names_follow_shared_metrics_comments() -> None:
    """The derivation above agrees with the names written beside each instrument."""
    source = (ROOT / "shared" / "metrics.py").read_text()
    written: set[str] = set()
    for base, parts in re.findall(r"#\s*(clipline_\w+?)(?:_\{([a-z,]+)\})?(?=\s|$)", source):
        written |= {f"{base}_{p}" for p in parts.split(",")} if parts else {base}
    assert written == catalogue()


SCRIPT = """
import sys
from opentelemetry import metrics as api
from shared import metrics
metrics.start("catalogue", "127.0.0.1", int(sys.argv[1]))
for value in vars(metrics).values():
    if isinstance(value, api.Counter):
        value.add(1)
    elif isinstance(value, api.Histogram):
        value.record(1.0)
    elif isinstance(value, api.Instrument):
        value.set(1)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_the_catalogue_names_are_the_ones_the_exporter_serves() -> None:
    """Every instrument recorded once in a process of its own: /metrics shows exactly the
    derived names (no more, no fewer)."""
    port = free_port()
    with subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        try:
            assert proc.stdout.readline().strip() == "ready"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)
    served = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line.startswith("clipline_")
    }
    assert served == catalogue()

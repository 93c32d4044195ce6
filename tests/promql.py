"""The metric names every query of the rules and the Grafana dashboards reads (the tokenizer is
tests/support/promql.py), and the catalogue's names (shared/metrics.py) they are checked on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from shared import metrics
from tests.conftest import repo_root
from tests.support.promql import metric_names

__all__ = ["metric_names"]  # the tokenizer (tests/support/promql.py) used by the rule tests

RULES = repo_root() / "deploy" / "prometheus" / "clipline-rules.yml"
DASHBOARDS = repo_root() / "deploy" / "grafana" / "dashboards"


def rule_exprs(path: Path = RULES) -> Iterator[str]:
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield str(rule["expr"])


def alerts(path: Path = RULES) -> set[str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {str(r["alert"]) for g in groups for r in g["rules"] if "alert" in r}


def recorded(path: Path = RULES) -> set[str]:
    """The names the recording rules make (they are not scraped)."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {str(r["record"]) for g in groups for r in g["rules"] if "record" in r}


def dashboard_exprs(dashboard: Any) -> Iterator[str]:
    """Every query of a Grafana dashboard's JSON: panels' targets (`expr`) and variables."""
    if isinstance(dashboard, dict):
        for key, value in dashboard.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from dashboard_exprs(value)
    elif isinstance(dashboard, list):
        for item in dashboard:
            yield from dashboard_exprs(item)


def dashboards() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json")) if DASHBOARDS.is_dir() else []


def clipline_names_used() -> dict[str, set[str]]:
    """Every `clipline_*` metric name the rules and the dashboards read -> where (file names);
    names the rules record are left out."""
    own = recorded()
    used: dict[str, set[str]] = {}
    sources = [(RULES.name, list(rule_exprs()))]
    sources += [(p.name, list(dashboard_exprs(json.loads(p.read_text())))) for p in dashboards()]
    for source, exprs in sources:
        for expr in exprs:
            for name in metric_names(expr):
                if name.startswith("clipline_") and name not in own:
                    used.setdefault(name, set()).add(source)
    return used


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exposed(name: str, scraped: set[str]) -> bool:
    """Is `name` among the scraped series names (a histogram by any of its series)?"""
    if name in scraped:
        return True
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    return any(base + s in scraped for s in HISTOGRAM_SUFFIXES)


def catalogue_names() -> set[str]:
    """The Prometheus names of shared/metrics.py's instruments (every series of a histogram)."""
    return set(instruments())


def instruments() -> dict[str, str]:
    """Prometheus name (each series of a histogram) -> the constant of shared/metrics.py."""
    return {
        name: constant
        for constant, instrument in metrics.instruments().items()
        for name in metrics.series_names(instrument)
    }


def instrument_of(name: str) -> str | None:
    found = instruments()
    if name in found:
        return found[name]
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    return next((found[base + s] for s in HISTOGRAM_SUFFIXES if base + s in found), None)

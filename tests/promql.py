"""The metric names a PromQL expression reads, and the names of every query in the rules and the
Grafana dashboards: a small tokenizer, no PromQL parser (strings, label matchers, ranges and
grouping label lists are dropped; a name followed by `(` is a function)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import repo_root

RULES = repo_root() / "deploy" / "prometheus" / "clipline-rules.yml"
DASHBOARDS = repo_root() / "deploy" / "grafana" / "dashboards"
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
     "unless", "offset", "inf", "nan", "atan2"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_NAME = re.compile(r"(?<![\w$:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_NUMBER = re.compile(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", re.IGNORECASE)


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` reads (recording rules' names, with a colon, included)."""
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    return {m for m in _NAME.findall(text) if m.lower() not in KEYWORDS}


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


CATALOGUE_NAME = re.compile(r"#\s*(clipline_[a-z0-9_]+?)(?:_\{([a-z,]+)\})?(?:\s|$)")


def catalogue_names() -> set[str]:
    """The Prometheus names shared/metrics.py documents beside its instruments."""
    names: set[str] = set()
    text = (repo_root() / "shared" / "metrics.py").read_text()
    for match in CATALOGUE_NAME.finditer(text):
        base, suffixes = match.group(1), match.group(2)
        if suffixes:
            names.update(f"{base}_{s}" for s in suffixes.split(","))
        else:
            names.add(base)
    return names


_INSTRUMENT = re.compile(r"^([A-Z][A-Z0-9_]+) = _(?:counter|seconds|gauge)\(", re.M)


def instruments() -> dict[str, str]:
    """Prometheus name (each series of a histogram) -> the constant of shared/metrics.py."""
    text = (repo_root() / "shared" / "metrics.py").read_text()
    starts = list(_INSTRUMENT.finditer(text))
    out = {}
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        match = CATALOGUE_NAME.search(text, start.end(), end)
        if match is None:
            continue
        base, suffixes = match.group(1), match.group(2)
        for name in [f"{base}_{s}" for s in suffixes.split(",")] if suffixes else [base]:
            out[name] = start.group(1)
    return out


def instrument_of(name: str) -> str | None:
    found = instruments()
    if name in found:
        return found[name]
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    return next((found[base + s] for s in HISTOGRAM_SUFFIXES if base + s in found), None)


def recorded_in_code() -> set[str]:
    """The instruments some code of clipline records into (`metrics.NAME.` outside the
    catalogue): an instrument nobody records yet has no series to scrape."""
    used = set()
    pattern = re.compile(r"\bmetrics\.([A-Z][A-Z0-9_]+)\b")
    for folder in ("services", "shared", "clipline"):
        for path in (repo_root() / folder).rglob("*.py"):
            if path.name != "metrics.py" or path.parent.name != "shared":
                used |= set(pattern.findall(path.read_text()))
    return used


AFTER_AN_EVENT = frozenset(
    {
        "clipline_messages_rejected_total",  # a poison message, an error budget spent
        "clipline_cost_disputed_micros_total",  # an upstream outcome unknown
        "clipline_cost_released_micros_total",  # a job failed or cancelled after admission
        "clipline_s3_errors_total",  # S3 failed
        "clipline_rate_limit_waits_total",  # creates held back
        "clipline_rate_limit_wait_seconds_bucket",
        "clipline_rate_limit_wait_seconds_sum",
        "clipline_rate_limit_wait_seconds_count",
        # pricing_guard gauges a tenant's disputed reservations once it has had one.
        "clipline_reservations_disputed",
    }
)
"""Counters a clean run never moves: an OpenTelemetry counter has no series before its first
add, and the rules read them through increase()/rate(), where no series means no alert."""

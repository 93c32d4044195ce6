"""deploy/prometheus/clipline-rules.yml: promtool accepts it, its alerts fire on the series that
should fire them (promtool's rule tests), it reads only catalogued metrics; the scrape
configuration `clipline up --observe` writes is valid Prometheus configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from clipline import observe
from tests import promql

RULE_TESTS = promql.RULES.with_name("clipline-rules.test.yml")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `make system-deps` installs Debian's prometheus")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_checks_the_rules() -> None:
    done = run("check", "rules", str(promql.RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_on_its_series_and_not_before_its_for() -> None:
    done = run("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_rule_test() -> None:
    alerts = promql.alerts()
    tested = RULE_TESTS.read_text()
    # Lag, 429s and failing jobs need minutes of history: left to the recording-rule tests.
    slow = {"CliplineConsumerLag", "CliplineUpstream429s", "CliplineJobsFailing"}
    untested = {a for a in alerts - slow if f"alertname: {a}" not in tested}
    assert not untested


def test_the_rules_read_only_catalogued_metrics() -> None:
    catalogue = promql.catalogue_names()
    used = {name for expr in promql.rule_exprs() for name in promql.metric_names(expr)}
    unknown = {
        name for name in used - promql.recorded() - {"up"} if not promql.exposed(name, catalogue)
    }
    assert not unknown, f"not in shared/metrics.py: {sorted(unknown)}"


def test_the_tokenizer_finds_metric_names_only() -> None:
    expr = (
        'sum by (tenant) (rate(a_total{to_state=~"x|y"}[5m])) * 60 > on (scope) group_left '
        "b_ratio and histogram_quantile(0.95, sum by (le) (rate(c_bucket[$__rate_interval]))) "
        "or clipline:recorded:rate1m > bool 1e-9"
    )
    assert promql.metric_names(expr) == {
        "a_total",
        "b_ratio",
        "c_bucket",
        "clipline:recorded:rate1m",
    }


def test_the_generated_scrape_configuration_is_valid(tmp_path: Path) -> None:
    targets = [("intake", 40001), ("pricing_guard-2", 40002)]
    path = tmp_path / "prometheus.yml"
    path.write_text(observe.scrape_config(targets))
    done = run("check", "config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rules found" in done.stdout  # the rules file is part of it
    text = path.read_text()
    assert '"process": "pricing_guard-2"' in text
    assert '"127.0.0.1:40002"' in text

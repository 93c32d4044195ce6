"""tests/support/promql.py: the metric names a PromQL expression reads, and nothing else."""

from __future__ import annotations

import pytest

from tests.support.promql import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ("clipline_poller_overdue > 0", {"clipline_poller_overdue"}),
        # functions, aggregations with their grouping either side, ranges and durations
        (
            'sum by (to_state) (rate(clipline_job_transitions_total{to_state="completed"}[5m]))',
            {"clipline_job_transitions_total"},
        ),
        (
            "sum(rate(clipline_s3_errors_total[1h30m])) without (reason, operation)",
            {"clipline_s3_errors_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, stage) "
            "(rate(clipline_stage_duration_seconds_bucket[$__rate_interval])))",
            {"clipline_stage_duration_seconds_bucket"},
        ),
        # numbers in every form, arithmetic, comparison with bool
        ("rate(a_total[5m]) * 3600 / 1e6 + 0x1f - .5 > bool 1.5e-3", {"a_total"}),
        # label matchers hold names that are not metrics, strings hold anything
        ('m{tenant=~"$tenant", model!="sora-2 {x} [y]", to_state!~"a|b"}', {"m"}),
        # vector matching keywords and their label lists
        (
            "clipline_budget_utilisation_ratio > on (scope, tenant, window) group_left "
            "clipline_budget_soft_threshold_ratio",
            {"clipline_budget_utilisation_ratio", "clipline_budget_soft_threshold_ratio"},
        ),
        (
            "a / ignoring(code) group_left(model) b unless c and d or e",
            {"a", "b", "c", "d", "e"},
        ),
        # offset and @ modifiers, subqueries
        (
            "max_over_time(rate(x_total[5m])[1h:1m] offset 1d) @ end()",
            {"x_total"},
        ),
        # the name as a matcher; recording-rule names with colons
        ('{__name__="clipline_consumer_pending", durable="x"}', {"clipline_consumer_pending"}),
        ("job:clipline_cost:rate5m", {"job:clipline_cost:rate5m"}),
        # strings as function arguments; topk/quantile parameters; absent()
        (
            'label_replace(topk(3, y), "dst", "$1", "src", "(.*)") or absent(z)',
            {"y", "z"},
        ),
        ('quantile(0.5, w) + count_values("v", w2)', {"w", "w2"}),
        ("time() - 1", set()),
        ("vector(1) + inf - NaN", set()),
    ],
)
def test_metric_names_finds_exactly_the_selected_metrics(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_function_name_is_not_a_metric_even_spaced_from_its_parenthesis() -> None:
    assert metric_names("rate (a[5m])") == {"a"}


def test_a_grafana_variable_in_a_range_or_a_matcher_leaves_no_name_behind() -> None:
    expr = 'increase(b_total{tenant=~"${tenant:regex}"}[$__range])'
    assert metric_names(expr) == {"b_total"}

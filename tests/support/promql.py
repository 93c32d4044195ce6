"""The metric names a PromQL expression reads: a small tokenizer for dashboards and rules."""

from __future__ import annotations

import re

__all__ = ["metric_names"]

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r"""__name__\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
_COMMENT = re.compile(r"#[^\n]*")
_TOKEN = re.compile(
    r"(?P<number>0[xX][0-9a-fA-F]+"
    r"|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)"
    r"|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<open>\()"
    r"|(?P<other>\S)"
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
"""Keywords followed by a parenthesised list of label names (optional after group_*)."""
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
        # aggregations, written `sum by (x) (...)` as well as `sum(...) by (x)`
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers that are neither functions (a name before
    `(`), keywords, grouping labels (`by (tenant)`), nor inside label matchers `{...}`, ranges
    `[5m]`, strings, numbers or durations. `{__name__="x"}` counts as x. Grafana variables
    (`$tenant`, `$__rate_interval`) are dropped first."""
    names: set[str] = set()
    text = _COMMENT.sub(" ", _GRAFANA_VARIABLE.sub(" ", expr))
    for braces in _BRACES.finditer(_STRING.sub(_keep_name_strings, text)):
        for match in _NAME_MATCHER.finditer(braces.group(0)):
            names.add(match.group(1) if match.group(1) is not None else match.group(2))
    text = _STRING.sub(" ", text)
    text = _BRACES.sub(" ", text)
    while True:  # subqueries nest: [5m:1m] holds no brackets, but be thorough
        stripped = _BRACKETS.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    tokens = [(m.lastgroup, m.group(0)) for m in _TOKEN.finditer(text)]
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        following = tokens[i + 1][0] if i + 1 < len(tokens) else None
        if kind == "ident":
            word = value.lower()
            if word in _GROUPING:
                i = _skip_label_list(tokens, i + 1)
                continue
            if following != "open" and word not in _KEYWORDS:
                names.add(value)
        i += 1
    return names


def _keep_name_strings(match: re.Match[str]) -> str:
    """Strings stay in place for the `__name__` scan (other strings may hold braces)."""
    text = match.group(0)
    return text if "{" not in text and "}" not in text else '""'


def _skip_label_list(tokens: list[tuple[str | None, str]], i: int) -> int:
    """Past `( label, ... )` starting at tokens[i], if there is one."""
    if i >= len(tokens) or tokens[i][0] != "open":
        return i
    while i < len(tokens) and tokens[i][1] != ")":
        i += 1
    return i + 1

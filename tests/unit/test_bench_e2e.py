"""The end-to-end benchmark's arithmetic (bench/e2e_stats.py) and its hand-written plot."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from bench.e2e_stats import (
    Latency,
    Usage,
    breakdown,
    classify,
    completion_rate,
    per_job,
    percentile,
    summed,
    varz_delta,
)
from bench.svgplot import Panel, Series, nice_max, render


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 90) == pytest.approx(4.6)  # numpy.percentile gives 4.6
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_to_100_is_an_error(q: float) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_latency_summary() -> None:
    latency = Latency.of([float(v) for v in range(1, 101)])
    assert latency.p50 == pytest.approx(50.5)
    assert latency.max == 100.0
    assert latency.p90 == pytest.approx(90.1)


def test_completion_rate_is_the_rate_between_first_and_last_completion() -> None:
    # 11 jobs completing every 0.1 s: 10 jobs/s, whenever they started.
    assert completion_rate([5 + i / 10 for i in range(11)]) == pytest.approx(10.0)
    assert completion_rate([1.0]) == 0.0
    assert completion_rate([2.0, 2.0]) == 0.0


def test_varz_delta_and_per_job() -> None:
    before = {"in_msgs": 100, "out_msgs": 50, "in_bytes": 1000, "out_bytes": 500, "cpu": 3}
    after = {"in_msgs": 4100, "out_msgs": 3050, "in_bytes": 9000, "out_bytes": 500, "cpu": 9}
    delta = varz_delta(before, after)
    assert delta == {"in_msgs": 4000, "out_msgs": 3000, "in_bytes": 8000, "out_bytes": 0}
    assert per_job(delta, 100) == {
        "in_msgs": 40.0, "out_msgs": 30.0, "in_bytes": 80.0, "out_bytes": 0.0,
    }  # fmt: skip


def test_varz_counter_going_down_is_a_restart_not_a_figure() -> None:
    before = {"in_msgs": 100, "out_msgs": 50, "in_bytes": 1000, "out_bytes": 500}
    with pytest.raises(ValueError, match="restarted"):
        varz_delta(before, {**before, "in_msgs": 10})
    with pytest.raises(TypeError):
        varz_delta(before, {**before, "out_msgs": "many"})
    with pytest.raises(ValueError, match="no jobs"):
        per_job({"in_msgs": 1}, 0)


DELIVERY = "delivery (to a consumer)"
CLASSES = [
    ("clipline.job.requested.v1.acme", "_INBOX.x.y", "request"),
    ("clipline.job.accepted.v1.acme.job_1", "", "event"),
    ("clipline.job.accepted.v1.acme.job_1", "$JS.ACK.JOBS.intake.1.2.3.4.5", DELIVERY),
    ("$KV.clipline_budgets.global.day", "_INBOX_pricing_guard.a", "KV write clipline_budgets"),
    ("$JS.API.DIRECT.GET.KV_clipline_jobs.$KV.clipline_jobs.job_1", "_INBOX_poller.b",
     "$JS.API.DIRECT.GET clipline_jobs"),
    ("$JS.API.STREAM.MSG.GET.KV_clipline_budgets", "_INBOX_pricing_guard.c",
     "$JS.API.STREAM.MSG.GET clipline_budgets"),
    ("$JS.API.STREAM.MSG.GET.JOBS", "_INBOX.d", "$JS.API.STREAM.MSG.GET JOBS"),
    ("$JS.ACK.JOBS.storage--x.1.7.7.1765000000.0", "", "$JS.ACK"),
    ("$JS.API.CONSUMER.MSG.NEXT.JOBS.poller--x", "_INBOX_poller.e",
     "pull $JS.API.CONSUMER.MSG.NEXT"),
    ("$JS.EVENT.ADVISORY.API", "", "$JS.EVENT.ADVISORY.API"),
    ("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.JOBS.x", "", "$JS.EVENT.ADVISORY (other)"),
    ("$JS.API.STREAM.INFO.JOBS", "_INBOX.f", "$JS.API STREAM"),
    ("_INBOX_pricing_guard.abc.1", "", "reply to _INBOX_pricing_guard"),
    ("_INBOX.abc.1", "", "reply to _INBOX"),
    ("clipline.webhook.thing", "", "other clipline"),
    ("something.else", "", "other"),
]  # fmt: skip


@pytest.mark.parametrize(("subject", "reply", "expected"), CLASSES)
def test_classify(subject: str, reply: str, expected: str) -> None:
    assert classify(subject, reply) == expected


def test_breakdown_is_per_job_most_first() -> None:
    rows = breakdown(Counter({"event": 50, "request": 10, "$JS.ACK": 60}), 10)
    assert rows == [("$JS.ACK", 6.0), ("event", 5.0), ("request", 1.0)]
    assert summed(rows) == 12.0


def test_nice_max_rounds_an_axis_up_to_1_2_2_5_or_5() -> None:
    assert [nice_max(v) for v in (0, 0.3, 1, 3, 15, 80, 101)] == [1, 0.5, 1, 5, 20, 100, 200]


def test_the_plot_is_well_formed_svg_with_every_point() -> None:
    series = [Series("clipline", [(10, 9.5), (20, 18.0)]), Series("script", [(10, 10), (20, 20)])]
    svg = render([Panel("t", "x", "y", series, diagonal=True), Panel("p", "x", "y", series)], "c")
    root = ET.fromstring(svg)
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == 8
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 4


def test_usage_growth() -> None:
    grown = Usage(2.5, 1.0, 700) - Usage(0.5, 0.25, 100)
    assert grown == Usage(2.0, 0.75, 600)
    assert grown.total == 2.75

"""The chaos suite's checks can fail: each kind of wrong evidence gives a non-zero count."""

from __future__ import annotations

from dataclasses import replace

from tests.chaos.verdict import (
    Evidence,
    Window,
    creates_per_job,
    judge,
    table,
    terminal_events,
)

COST = 400_000
JOBS = ["job_a", "job_b", "job_c"]


def clean() -> Evidence:
    """Two jobs done, one refused by its budget: everything adds up."""
    return Evidence(
        job_ids=JOBS,
        terminal={
            "job_a": ["completed"],
            "job_b": ["completed"],
            "job_c": ["rejected budget_exceeded"],
        },
        creates={"job_a": 1, "job_b": 1, "job_c": 0},
        upstream={"job_a": COST, "job_b": COST},
        charged={"job_a": COST, "job_b": COST, "job_c": 0},
        ledger_micros=2 * COST,
        windows=[Window("tenant:t lifetime lifetime", 2 * COST, 2 * COST)],
    )


def test_clean_evidence_passes_and_reports_failures_by_reason() -> None:
    verdict = judge("all-together", clean(), 12.0)
    assert verdict.ok, verdict.problems()
    assert (verdict.jobs, verdict.done, verdict.failed) == (3, 2, {"rejected budget_exceeded": 1})
    assert (verdict.lost, verdict.duplicate_creates, verdict.duplicate_terminals) == (0, 0, 0)
    assert (verdict.spend_mismatch_micros, verdict.overshoot_micros) == (0, 0)


def test_a_job_created_twice_upstream_is_a_duplicate_create() -> None:
    verdict = judge("s", replace(clean(), creates={"job_a": 2, "job_b": 1, "job_c": 0}))
    assert verdict.duplicate_creates == 1
    assert not verdict.ok
    assert verdict.problems() == ["duplicate creates 1"]


def test_a_job_with_no_terminal_event_is_lost() -> None:
    terminal = {"job_a": ["completed"], "job_c": ["rejected budget_exceeded"]}
    verdict = judge("s", replace(clean(), terminal=terminal))
    assert verdict.lost == 1
    assert "lost 1" in verdict.problems()


def test_two_terminal_events_of_one_job_are_a_duplicate() -> None:
    terminal = {**clean().terminal, "job_b": ["completed", "failed upstream_lost"]}
    verdict = judge("s", replace(clean(), terminal=terminal))
    assert verdict.duplicate_terminals == 1
    assert verdict.done == 2  # the first terminal event decides how the job is counted
    assert "duplicate terminal events 1" in verdict.problems()


def test_ledger_records_and_upstream_that_disagree_are_a_mismatch() -> None:
    ledger_off = judge("s", replace(clean(), ledger_micros=3 * COST))
    assert ledger_off.spend_mismatch_micros == COST
    paid_unbilled = {"job_a": COST, "job_b": COST, "job_c": COST}  # job_c was created upstream
    upstream_off = judge("s", replace(clean(), upstream=paid_unbilled))
    assert upstream_off.spend_mismatch_micros == COST
    charged_twice = {"job_a": 2 * COST, "job_b": COST, "job_c": 0}  # ledger agrees: 3 jobs' worth
    records_off = judge("s", replace(clean(), charged=charged_twice, ledger_micros=3 * COST))
    assert records_off.spend_mismatch_micros == COST
    for verdict in (ledger_off, upstream_off, records_off):
        assert not verdict.ok


def test_errors_of_two_jobs_do_not_cancel_out() -> None:
    """One job charged without its create, another created but not charged: the totals agree,
    the jobs do not."""
    swapped = replace(
        clean(),
        upstream={"job_a": COST, "job_c": COST},
        charged={"job_a": COST, "job_b": COST, "job_c": 0},
    )
    assert judge("s", swapped).spend_mismatch_micros == 2 * COST


def test_a_window_used_beyond_its_limit_is_an_overshoot() -> None:
    windows = [
        Window("tenant:t lifetime lifetime", 3 * COST, 2 * COST),
        Window("tenant:t daily 2026-12-08", COST, 2 * COST),  # within: adds nothing
    ]
    verdict = judge("s", replace(clean(), windows=windows))
    assert verdict.overshoot_micros == COST
    assert "budget overshoot (micro-dollars) 400000" in verdict.problems()


def test_a_fault_that_could_not_be_undone_fails_the_scenario() -> None:
    verdict = replace(judge("s", clean()), errors=["fault failed: ServerError('s3')"])
    assert not verdict.ok


def test_terminal_events_keep_only_endings_in_stream_order() -> None:
    events = [
        ("accepted", "job_a", ""),
        ("completed", "job_a", ""),
        ("failed", "job_b", "retries_exhausted"),
        ("completed", "job_a", ""),
    ]
    assert terminal_events(events) == {
        "job_a": ["completed", "completed"],
        "job_b": ["failed retries_exhausted"],
    }


def test_creates_are_counted_per_job_and_strangers_ignored() -> None:
    counted = creates_per_job(["job_a", "job_a", None, "job_other", "job_b"], JOBS)
    assert counted == {"job_a": 2, "job_b": 1, "job_c": 0}


def test_the_table_has_a_row_per_scenario_with_every_count() -> None:
    verdicts = [judge("services-kill", clean(), 30.4), judge("s3-outage", clean(), 101.0)]
    text = table(verdicts)
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:3] == ["scenario", "jobs", "done"]
    assert lines[1].startswith("services-kill")
    assert "rejected budget_exceeded: 1" in lines[1]
    markdown = table(verdicts, markdown=True).splitlines()
    assert markdown[0].startswith("| scenario | jobs | done | failed by reason | lost |")
    assert markdown[3].startswith("| s3-outage | 3 | 2 |")


def test_a_job_held_in_dispute_is_the_operators_and_shown_apart() -> None:
    """A job whose create may exist upstream but was never found again ends disputed (the
    billing policy): the operator settles it, whether the upstream made it or not."""
    created = replace(clean(), upstream={"job_a": COST, "job_b": COST, "job_c": COST})
    assert judge("s", created).spend_mismatch_micros == COST  # not disputed: unaccounted
    for evidence in (created, clean()):  # the ambiguous create went through, or did not
        verdict = judge("s", replace(evidence, disputed={"job_c": COST}))
        assert verdict.ok, verdict.problems()
        assert (verdict.disputed_jobs, verdict.disputed_micros) == (1, COST)
        assert "$0.40 (1)" in table([verdict])

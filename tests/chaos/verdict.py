"""What one chaos scenario's evidence adds up to, and the table of them. Pure: no I/O.

The evidence is gathered after the scenario (tests/chaos/run.py): every terminal event the
CLIPLINE_JOBS stream holds for the scenario's jobs, the simulator's creates, the spend ledger,
the job records' charges and the tenant's budget windows. `judge` turns it into counts;
`Verdict.problems` names every count that fails the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

TERMINAL = frozenset({"completed", "failed", "rejected", "timed_out", "cancelled"})
"""Event kinds that end a job (shared/contracts/lifecycle.py): each job has exactly one."""


@dataclass(frozen=True)
class Window:
    """One budget window of the scenario's tenant: what it has used against its limit."""

    name: str  # scope, period and window, e.g. "tenant:x lifetime lifetime"
    used_micros: int
    limit_micros: int


@dataclass(frozen=True)
class Evidence:
    """What a scenario left behind, in the terms the checks need."""

    job_ids: Sequence[str]
    """Every job submitted (its id from tenant and idempotency key)."""
    terminal: Mapping[str, Sequence[str]]
    """Job id -> its terminal events in the stream, in order, each "kind" or "kind reason"."""
    creates: Mapping[str, int]
    """Job id -> accepted upstream creates (the simulator's /control/creates)."""
    upstream: Mapping[str, int]
    """Job id -> its upstream creates at the registry's prices (the simulator's accounting)."""
    charged: Mapping[str, int]
    """Job id -> the charge on its record (charged_micros; 0 when none)."""
    ledger_micros: int
    """The spend ledger's total for the tenant (pricing_guard's admin API)."""
    windows: Sequence[Window] = ()
    disputed: Mapping[str, int] = field(default_factory=dict)
    """Job id -> its estimate, for the jobs held in dispute for the operator (pricing_guard's
    billing policy): a job that ended while an upstream create of it may exist (an ambiguous
    create never found again). Counted against the budget; their upstream money is the
    operator's to settle, so they are left out of the per-job comparison and shown apart."""


@dataclass(frozen=True)
class Verdict:
    scenario: str
    jobs: int
    done: int
    failed: dict[str, int]
    lost: int
    duplicate_creates: int
    duplicate_terminals: int
    spend_mismatch_micros: int
    overshoot_micros: int
    seconds: float = 0.0
    faults: list[str] = field(default_factory=list)
    money: tuple[int, int, int] = (0, 0, 0)  # ledger, records, upstream (micro-dollars)
    disputed_micros: int = 0
    disputed_jobs: int = 0
    errors: list[str] = field(default_factory=list)  # a fault that could not be done or undone

    def problems(self) -> list[str]:
        """Every count that must be 0 and is not; empty when the scenario passes."""
        counts = {
            "lost": self.lost,
            "duplicate creates": self.duplicate_creates,
            "duplicate terminal events": self.duplicate_terminals,
            "spend mismatch (micro-dollars)": self.spend_mismatch_micros,
            "budget overshoot (micro-dollars)": self.overshoot_micros,
        }
        return [f"{name} {n}" for name, n in counts.items() if n] + self.errors

    @property
    def ok(self) -> bool:
        return not self.problems()


def judge(scenario: str, evidence: Evidence, seconds: float = 0.0) -> Verdict:
    """The counts of one scenario. A job is lost when no terminal event of it is in the stream;
    a job created upstream n > 1 times adds n - 1 duplicate creates, and one with n > 1
    terminal events n - 1 duplicate terminals; the spend mismatch is |ledger - records' total|
    plus, for each job not in dispute, |its record's charge - its upstream cost| (so errors
    cannot cancel out between jobs); the overshoot sums what each budget window used over its
    limit."""
    jobs = list(dict.fromkeys(evidence.job_ids))
    ends = {j: list(evidence.terminal.get(j, ())) for j in jobs}
    first = {j: e[0] for j, e in ends.items() if e}
    failed = Counter(end for end in first.values() if end.split(" ", 1)[0] != "completed")
    ledger = evidence.ledger_micros
    records = sum(evidence.charged.get(j, 0) for j in jobs)
    upstream = sum(evidence.upstream.get(j, 0) for j in jobs)
    per_job = sum(
        abs(evidence.charged.get(j, 0) - evidence.upstream.get(j, 0))
        for j in jobs
        if j not in evidence.disputed
    )
    return Verdict(
        scenario=scenario,
        jobs=len(jobs),
        done=sum(1 for end in first.values() if end.split(" ", 1)[0] == "completed"),
        failed=dict(sorted(failed.items())),
        lost=sum(1 for e in ends.values() if not e),
        duplicate_creates=sum(max(0, evidence.creates.get(j, 0) - 1) for j in jobs),
        duplicate_terminals=sum(max(0, len(e) - 1) for e in ends.values()),
        spend_mismatch_micros=abs(ledger - records) + per_job,
        overshoot_micros=sum(max(0, w.used_micros - w.limit_micros) for w in evidence.windows),
        seconds=seconds,
        money=(ledger, records, upstream),
        disputed_micros=sum(evidence.disputed.values()),
        disputed_jobs=len(evidence.disputed),
    )


def terminal_events(events: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    """(kind, job id, reason) of a stream's events, in stream order -> each job's terminal
    events ("kind" or "kind reason"); other kinds are left out."""
    out: dict[str, list[str]] = {}
    for kind, job_id, reason in events:
        if kind in TERMINAL:
            out.setdefault(job_id, []).append(f"{kind} {reason}".strip())
    return out


def creates_per_job(
    client_request_ids: Sequence[str | None], jobs: Sequence[str]
) -> dict[str, int]:
    """The simulator's accepted creates (their X-Client-Request-Id) counted per job of `jobs`."""
    mine = set(jobs)
    counted = Counter(c for c in client_request_ids if c is not None and c in mine)
    return {j: counted.get(j, 0) for j in jobs}


def usd(micros: int) -> str:
    return f"${micros / 1_000_000:,.2f}"


HEADERS = ("scenario", "jobs", "done", "failed by reason", "lost", "dup creates",
           "dup terminal", "spend mismatch", "overshoot", "charged", "disputed",
           "seconds")  # fmt: skip


def rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    return [
        [
            v.scenario,
            str(v.jobs),
            str(v.done),
            ", ".join(f"{reason}: {n}" for reason, n in v.failed.items()) or "-",
            str(v.lost),
            str(v.duplicate_creates),
            str(v.duplicate_terminals),
            usd(v.spend_mismatch_micros),
            usd(v.overshoot_micros),
            usd(v.money[0]),
            f"{usd(v.disputed_micros)} ({v.disputed_jobs})" if v.disputed_jobs else "-",
            f"{v.seconds:.0f}",
        ]
        for v in verdicts
    ]


def table(verdicts: Sequence[Verdict], markdown: bool = False) -> str:
    """The per-scenario table: aligned columns, or a Markdown table."""
    body = rows(verdicts)
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [list(HEADERS), *body]) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [list(HEADERS), *body]
    )

"""The job lifecycle: one state machine, one typed function per step, nothing else moves a job.

Every step names the states it may leave and the state it enters (`STEPS`); the functions below
are the only way to build a changed record, and each refuses a move its step does not allow
(`IllegalTransition`). docs/lifecycle.md is generated from `STEPS` (`mermaid()`), and a test keeps
them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.contracts.events import AssetRef
    from shared.contracts.jobs import JobRecordV1


class JobStatus(StrEnum):
    ACCEPTED = "accepted"
    ADMITTED = "admitted"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    GENERATING = "generating"
    GENERATED = "generated"
    STORING = "storing"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class CreateOutcome(StrEnum):
    """What the latest upstream create attempt says about the upstream (`create_outcome`)."""

    IN_FLIGHT = "in_flight"
    """Recorded before the POST. Still so after the lease ran out: its process died, and the
    request may or may not have left."""
    NOT_SENT = "not_sent"
    """The request never left (no connection): nothing can exist upstream."""
    REFUSED = "refused"
    """The upstream answered 429 or another 4xx: it made nothing."""
    SERVER_ERROR = "server_error"
    """The upstream answered 5xx: usually nothing was made, but it is reconciled first."""
    NO_ANSWER = "no_answer"
    """Sent and the answer lost (timeout, dropped connection, unreadable body): it may exist."""
    CREATED = "created"
    """The upstream answered with the video; its id is on the record."""


CREATE_MAY_EXIST = frozenset(
    {
        CreateOutcome.IN_FLIGHT,
        CreateOutcome.SERVER_ERROR,
        CreateOutcome.NO_ANSWER,
        CreateOutcome.CREATED,
    }
)
"""Outcomes after which an upstream create may exist (and may be billed)."""
ENDED_ATTEMPT = frozenset(
    {
        CreateOutcome.NOT_SENT,
        CreateOutcome.REFUSED,
        CreateOutcome.SERVER_ERROR,
        CreateOutcome.NO_ANSWER,
    }
)
"""Outcomes `end_attempt` records (a created one is `mark_submitted`'s)."""

S = JobStatus
TERMINAL = frozenset({S.COMPLETED, S.REJECTED, S.FAILED, S.CANCELLED, S.TIMED_OUT})
LIVE = frozenset(S) - TERMINAL
UPSTREAM_STARTED = frozenset({S.SUBMITTED, S.GENERATING, S.GENERATED, S.STORING})
"""States in which an upstream job surely exists (and may be billed)."""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    sources: frozenset[JobStatus]
    target: JobStatus
    doc: str


def _step(name: str, sources: set[JobStatus] | frozenset[JobStatus], target: S, doc: str) -> Step:
    return Step(name, frozenset(sources), target, doc)


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        _step("admit", {S.ACCEPTED}, S.ADMITTED, "priced and within budget"),
        _step("reject", {S.ACCEPTED}, S.REJECTED, "refused before any upstream spend"),
        _step(
            "begin_submit",
            {S.ADMITTED, S.SUBMITTING},
            S.SUBMITTING,
            "an upstream create may be in flight (recorded before the POST)",
        ),
        _step(
            "retry_submit",
            {S.SUBMITTING},
            S.ADMITTED,
            "the upstream made nothing (429): back in line",
        ),
        _step("mark_submitted", {S.SUBMITTING}, S.SUBMITTED, "the upstream job exists"),
        _step(
            "report_progress",
            {S.SUBMITTED, S.GENERATING},
            S.GENERATING,
            "upstream progress moved forward",
        ),
        _step("mark_generated", {S.SUBMITTED, S.GENERATING}, S.GENERATED, "upstream finished"),
        _step("begin_store", {S.GENERATED, S.STORING}, S.STORING, "assets are being stored"),
        _step("complete", {S.STORING}, S.COMPLETED, "every asset is stored"),
        _step("request_cancel", LIVE - {S.CANCELLING}, S.CANCELLING, "a client asked to cancel"),
        _step("cancel", {S.CANCELLING}, S.CANCELLED, "stopped; nothing more is done"),
        _step("fail", LIVE, S.FAILED, "gave up, with a reason"),
        _step(
            "time_out",
            LIVE - {S.ACCEPTED},
            S.TIMED_OUT,
            "a deadline passed (upstream may still bill)",
        ),
    )
}


class IllegalTransition(ValueError):
    """A step asked of a job in a state that step may not leave (or would not move forward)."""

    def __init__(self, message: str, target: JobStatus | None = None) -> None:
        super().__init__(message)
        self.target = target
        """The state the refused step leads to (a caller may find the job already there)."""


def _move(record: JobRecordV1, step: str, at: datetime, **fields: Any) -> JobRecordV1:
    spec = STEPS[step]
    if record.status not in spec.sources:
        raise IllegalTransition(f"{step}: {record.job_id} is {record.status.value}", spec.target)
    history = dict(record.history)
    history.setdefault(spec.target.value, at)
    return record.model_copy(update={"status": spec.target, "history": history, **fields})


def _end(
    record: JobRecordV1, step: str, at: datetime, *, reason: str, detail: str, stage: str
) -> JobRecordV1:
    return _move(record, step, at, reason=reason, detail=detail[:1000], stage=stage)


# -- the steps ----------------------------------------------------------------------------------


def admit(record: JobRecordV1, at: datetime, *, cost_micros: int) -> JobRecordV1:
    return _move(record, "admit", at, cost_micros=cost_micros)


def reject(
    record: JobRecordV1, at: datetime, *, reason: str, detail: str, stage: str
) -> JobRecordV1:
    return _end(record, "reject", at, reason=reason, detail=detail, stage=stage)


def begin_submit(record: JobRecordV1, at: datetime) -> JobRecordV1:
    """Recorded (by compare-and-set) before every upstream create attempt."""
    return _move(
        record, "begin_submit", at, submit_attempts=record.submit_attempts + 1,
        last_attempt_at=at, attempt_alive_at=at, create_outcome=CreateOutcome.IN_FLIGHT,
    )  # fmt: skip


ATTEMPT_HOLDERS = frozenset({S.SUBMITTING, S.CANCELLING})
"""States in which a create attempt may still be running: a job cancelled while its create is
in flight keeps the attempt's lease and outcome until the create answers."""


def _own_attempt(record: JobRecordV1, step: str, attempt: int) -> None:
    """An attempt acts on the record only while it is the latest (a newer one owns it then)."""
    if record.status in ATTEMPT_HOLDERS and record.submit_attempts != attempt:
        raise IllegalTransition(
            f"{step}: attempt {attempt} of {record.job_id} was overtaken by attempt "
            f"{record.submit_attempts}"
        )


def retry_submit(record: JobRecordV1, at: datetime, *, attempt: int) -> JobRecordV1:
    """The upstream refused create `attempt` before making anything (a 429): back in line,
    nothing to reconcile."""
    _own_attempt(record, "retry_submit", attempt)
    return _move(
        record, "retry_submit", at, attempt_alive_at=None, create_outcome=CreateOutcome.REFUSED
    )


def mark_submitted(
    record: JobRecordV1, at: datetime, *, upstream_id: str, created_at: datetime | None = None
) -> JobRecordV1:
    return _move(
        record, "mark_submitted", at, upstream_id=upstream_id, upstream_created_at=created_at,
        create_outcome=CreateOutcome.CREATED,
    )  # fmt: skip


def report_progress(record: JobRecordV1, at: datetime, *, progress: int) -> JobRecordV1:
    if record.status == S.GENERATING and progress <= record.progress:
        raise IllegalTransition(
            f"report_progress: {record.job_id} is at {record.progress}%", S.GENERATING
        )
    return _move(record, "report_progress", at, progress=max(0, min(99, progress)))


def mark_generated(
    record: JobRecordV1,
    at: datetime,
    *,
    produced_seconds: int | None = None,
    expires_at: datetime | None = None,
) -> JobRecordV1:
    return _move(
        record, "mark_generated", at, progress=100, produced_seconds=produced_seconds,
        expires_at=expires_at,
    )  # fmt: skip


def begin_store(record: JobRecordV1, at: datetime) -> JobRecordV1:
    return _move(record, "begin_store", at)


def complete(record: JobRecordV1, at: datetime, *, assets: list[AssetRef]) -> JobRecordV1:
    return _move(record, "complete", at, assets=list(assets))


def request_cancel(record: JobRecordV1, at: datetime) -> JobRecordV1:
    return _move(record, "request_cancel", at)


def cancel(
    record: JobRecordV1,
    at: datetime,
    *,
    stage: str,
    detail: str | None = None,
    upstream_id: str | None = None,
) -> JobRecordV1:
    """End a cancelling job. `upstream_id`: a create that was in flight when the cancel came
    answered with this video (the upstream job exists and bills: the sunk cost). Without a
    `detail`, the record's own state says what the cancel left behind."""
    why = detail if detail is not None else cancel_detail(record, upstream_id)
    ended = _end(record, "cancel", at, reason="cancelled", detail=why, stage=stage)
    if upstream_id is None or record.upstream_id is not None:
        return ended.model_copy(update={"attempt_alive_at": None})
    return ended.model_copy(
        update={
            "upstream_id": upstream_id,
            "create_outcome": CreateOutcome.CREATED,
            "attempt_alive_at": None,
        }
    )


def cancel_detail(record: JobRecordV1, upstream_id: str | None = None) -> str:
    """What cancelling `record` leaves behind upstream, in one sentence."""
    upstream = record.upstream_id or upstream_id
    if upstream and S.GENERATED.value in record.history:
        return f"cancelled after upstream {upstream} finished: not stored (the video is billed)"
    if upstream:
        return (
            f"cancelled after submission: upstream {upstream} cannot be stopped and runs on, "
            "no longer followed (its estimate is the sunk cost)"
        )
    if record.create_outcome in CREATE_MAY_EXIST:
        return (
            f"cancelled while a create may have reached the upstream "
            f"({record.create_outcome.value}): what it cost is unknown"
        )
    return "cancelled before submission: nothing was created upstream"


def fail(record: JobRecordV1, at: datetime, *, reason: str, detail: str, stage: str) -> JobRecordV1:
    return _end(record, "fail", at, reason=reason, detail=detail, stage=stage)


def time_out(
    record: JobRecordV1, at: datetime, *, reason: str, detail: str, stage: str
) -> JobRecordV1:
    return _end(record, "time_out", at, reason=reason, detail=detail, stage=stage)


# -- bookkeeping that is not a move -------------------------------------------------------------


def count_error(record: JobRecordV1, stage: str) -> JobRecordV1:
    """One more handling error of `stage` (the retry budget survives redeliveries and crashes)."""
    if record.status in TERMINAL:
        raise IllegalTransition(f"count_error: {record.job_id} is {record.status.value}")
    errors = dict(record.errors)
    errors[stage] = errors.get(stage, 0) + 1
    return record.model_copy(update={"errors": errors})


def keep_assets(record: JobRecordV1, assets: list[AssetRef]) -> JobRecordV1:
    """Variants stored so far of a job still `storing` (one per variant, the latest kept), so
    a later delivery stores only what is missing."""
    if record.status != S.STORING:
        raise IllegalTransition(f"keep_assets: {record.job_id} is {record.status.value}")
    kept = {a.variant: a for a in record.assets} | {a.variant: a for a in assets}
    return record.model_copy(update={"assets": list(kept.values())})


def renew_attempt(record: JobRecordV1, at: datetime, *, attempt: int) -> JobRecordV1:
    """Create `attempt` is still in flight: its lease on the record is renewed (also while the
    job is cancelling: the cancel waits for the create's answer)."""
    ended = record.status == S.CANCELLING and record.create_outcome != CreateOutcome.IN_FLIGHT
    if record.status not in ATTEMPT_HOLDERS or ended:
        raise IllegalTransition(f"renew_attempt: {record.job_id} is {record.status.value}")
    _own_attempt(record, "renew_attempt", attempt)
    return record.model_copy(update={"attempt_alive_at": at})


def end_attempt(
    record: JobRecordV1, at: datetime, *, attempt: int, outcome: CreateOutcome
) -> JobRecordV1:
    """Create `attempt` ended without a video, as `outcome` says (not sent, refused, a 5xx, no
    answer). The job stays `submitting` and the lease is released, so the next delivery acts at
    once by the outcome: sends again what never left or was refused, reconciles the rest. A
    cancelling job records it too (its bill depends on it), and stays cancelling."""
    if record.status not in ATTEMPT_HOLDERS:
        raise IllegalTransition(f"end_attempt: {record.job_id} is {record.status.value}")
    if outcome not in ENDED_ATTEMPT:
        raise ValueError(f"end_attempt: {outcome.value} is not how an attempt ends unanswered")
    _own_attempt(record, "end_attempt", attempt)
    return record.model_copy(update={"attempt_alive_at": None, "create_outcome": outcome})


def check_move(old: JobRecordV1 | None, new: JobRecordV1) -> None:
    """Refuse a write that changes status by no step of the machine (the stores call this, so
    an illegal move cannot be written even by code that bypasses the step functions)."""
    if old is None:
        if new.status != S.ACCEPTED:
            raise IllegalTransition(f"a job is created accepted, not {new.status.value}")
        return
    if old.status == new.status:
        bookkeeping = {"charged_micros", "deleted_at"}
        if old.status in TERMINAL and (
            new.model_dump(exclude=bookkeeping) != old.model_dump(exclude=bookkeeping)
            or (old.deleted_at is not None and new.deleted_at != old.deleted_at)
        ):
            raise IllegalTransition(
                f"{old.job_id} is {old.status.value}: only settled or deleted, never changed"
            )
        return
    if not any(old.status in s.sources and s.target == new.status for s in STEPS.values()):
        raise IllegalTransition(
            f"{old.job_id}: no step leads {old.status.value} -> {new.status.value}"
        )


def mark_deleted(record: JobRecordV1, at: datetime) -> JobRecordV1:
    """The caller deleted the stored assets of an ended job (once: a repeat keeps the time)."""
    if record.status not in TERMINAL:
        raise IllegalTransition(f"mark_deleted: {record.job_id} is {record.status.value}")
    if record.deleted_at is not None:
        return record
    return record.model_copy(update={"deleted_at": at})


def settle(record: JobRecordV1, *, charged_micros: int) -> JobRecordV1:
    """The final charge of a terminal job, written once."""
    if record.status not in TERMINAL or record.charged_micros is not None:
        raise IllegalTransition(f"settle: {record.job_id} is {record.status.value} / settled")
    return record.model_copy(update={"charged_micros": charged_micros})


# -- documentation ------------------------------------------------------------------------------


def mermaid() -> str:
    """The state diagram of `STEPS`, as a mermaid block (docs/lifecycle.md embeds it)."""
    lines = ["stateDiagram-v2", f"    [*] --> {S.ACCEPTED.value}"]
    order = list(S)
    for step in STEPS.values():
        for source in sorted(step.sources, key=order.index):
            lines.append(f"    {source.value} --> {step.target.value}: {step.name}")
    lines += [f"    {t.value} --> [*]" for t in sorted(TERMINAL, key=order.index)]
    return "\n".join(lines)


def lifecycle_markdown() -> str:
    """The whole docs/lifecycle.md, generated so that it can never drift from the code."""
    order = list(S)
    rows = "\n".join(
        f"| `{s.name}` | {', '.join(f'`{x.value}`' for x in sorted(s.sources, key=order.index))} "
        f"| `{s.target.value}` | {s.doc} |"
        for s in STEPS.values()
    )
    terminal = ", ".join(f"`{t.value}`" for t in sorted(TERMINAL, key=order.index))
    return f"""# Job lifecycle

<!-- Generated by `make schemas` from shared/contracts/lifecycle.py; a test fails on drift. -->

Every job record (KV bucket `clipline_jobs`, key `<tenant>.<job_id>`) moves only through the
steps below, each a typed function in `shared/contracts/lifecycle.py`, applied with
compare-and-set. A step asked of a job in any other state is refused (`IllegalTransition`), so a
redelivered or reordered event can never move a job backwards. Terminal states ({terminal})
never change again; the record keeps the `reason`, the human `detail` and the `stage` of every
terminal outcome.

```mermaid
{mermaid()}
```

| step | from | to | meaning |
|---|---|---|---|
{rows}

Notes:
- `submitting` is recorded before every upstream create, so after a crash the record tells that
  a create may have reached the upstream (reconciled before any new create).
- `report_progress` may repeat only with higher progress; `begin_submit` and `begin_store` may
  repeat (a retried attempt). While a create runs, its attempt renews a lease on the record
  (`attempt_alive_at`): a second delivery of the job waits instead of reconciling under a live
  attempt. A 429 moves the job back to `admitted` (`retry_submit`); any other attempt that
  ended without a video clears the lease (`end_attempt`) and records what it says about the
  upstream in `create_outcome`: `not_sent` (no connection) or `refused` (4xx) is sent again
  (or fails the job) without reconciling, `server_error` (5xx) is reconciled and created again
  when nothing matches, `no_answer` (timeout, dropped connection) is reconciled and fails
  `create_ambiguous` when nothing matches. `in_flight` (set by `begin_submit`) with the lease
  run out is an attempt whose process died: reconciled, and created again when nothing matches.
- `create_outcome` is also the billing signal: `in_flight`, `server_error`, `no_answer` and
  `created` mean an upstream create may exist; a record without it (written before it
  existed) falls back to its history (`submitting` reached).
- `request_cancel` (a client, through intake) leaves any live state but `cancelling`; nothing
  but `cancel`, `fail` and `time_out` leaves `cancelling`, so no create starts once a job is
  cancelling. A create already in flight keeps its lease (`renew_attempt`) and records how it
  ended (`end_attempt`) while the job is cancelling, and a video it answered with is recorded
  by `cancel` itself (`upstream_id`, `create_outcome` `created`): what the upstream made
  decides the bill.
- Error budgets (`errors` per stage), the variants a `storing` job has stored so far
  (`keep_assets`) and the final charge (`charged_micros`) are bookkeeping on the record, not
  moves.

## Who trusts what

The record is the one source of a job's facts: its `spec` (written by intake), its
`cost_micros` (pricing_guard, `admit`), its `upstream_id` (submitter, `mark_submitted`) and its
`expires_at`, when the upstream's copy of the assets expires (poller, `mark_generated`). Events
are notifications that name a job; the copies of these facts they carry are for subscribers
outside the pipeline, and no stage acts on them:

| stage | woken by | acts on the record's |
|---|---|---|
| pricing_guard | `accepted` | `spec` (priced and reserved; never for a job without a record) |
| submitter | `admitted`, `cancel_requested` | `spec` (what is created upstream) |
| poller | `submitted` (and signed webhooks) | `upstream_id` (what is looked at) |
| storage | `generated` | `upstream_id`, `cost_micros`, `expires_at` (what is stored, by when) |
| pricing_guard | every end (`completed`, `failed`, ...) | status, history (what is charged) |
| `clipline submit --wait` | any terminal event | status, assets, cost (what is reported) |

Every stage first screens the event against the record (`shared/contracts/stage.py`): an
event whose job has no record, or whose copies of the facts disagree with it (another spec,
cost, upstream id or tenant), changes nothing, and the stage logs one WARNING naming the job,
the event kind and what disagreed (the message is acked, never retried). A job that already
ended is announced again by the stage that ended it; a job that is `cancelling` is cancelled
by the stage whose work it stops. What is left, the stage decides from the record alone.
"""

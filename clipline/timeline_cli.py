"""`clipline timeline JOB`: a job's life step by step (`GET /v1/jobs/{id}/timeline`), as a table
or JSON; needs no tracing backend."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from clipline import output
from clipline.jobs_cli import _connection_options, _job_arg, choice, run
from clipline.remote import OK, REFUSED, UNREACHABLE, Api, CliError, refusal, target

HEADERS = ["STEP", "SERVICE", "AT (UTC)", "+PREVIOUS", "TOTAL", "COST", "REASON"]
REASON_WIDTH = 60


def usd(micros: Any) -> str:
    return f"${micros / 1_000_000:.2f}" if isinstance(micros, int) else ""


def seconds(value: Any) -> str:
    return f"{value:.2f}s" if isinstance(value, int | float) else ""


def rows(timeline: dict[str, Any]) -> list[list[str]]:
    """The table's rows: one a step."""
    found = []
    for step in timeline.get("steps") or []:
        name = str(step.get("step"))
        if step.get("progress") is not None:
            name += f" {step['progress']}%"
        if step.get("source") == "record":
            name += " (record)"
        cost = usd(step.get("cost_micros"))
        if cost and step.get("cost_kind") == "reserved":
            cost += " reserved"
        why = ": ".join(str(step[k]) for k in ("reason", "detail") if step.get(k))
        if len(why) > REASON_WIDTH:
            why = why[: REASON_WIDTH - 3] + "..."
        at = str(step.get("at") or "")
        found.append([
            name, str(step.get("service") or "?"), at[11:23] or at,
            "+" + seconds(step.get("since_previous_seconds")),
            seconds(step.get("since_start_seconds")), cost, why,
        ])  # fmt: skip
    return found


def summary(timeline: dict[str, Any]) -> list[str]:
    """The lines around the table: the job, its trace, its price and charge, retries, notes."""
    steps = timeline.get("steps") or []
    day = str(steps[0].get("at"))[:10] if steps else ""
    lines = [
        f"job {timeline.get('job_id')}  {timeline.get('status')}  {day}  "
        f"trace {timeline.get('trace_id') or 'unknown'}"
    ]
    after = [
        f"price    {usd(timeline.get('cost_micros')) or 'unknown'}",
        "charged  " + (usd(timeline.get("charged_micros")) + " (settled)"
                       if timeline.get("settled") else "not settled"),
    ]  # fmt: skip
    attempts = timeline.get("submit_attempts") or 0
    errors = timeline.get("errors") or {}
    if attempts > 1 or errors:
        told = ", ".join(f"{service} {n}" for service, n in sorted(errors.items()))
        after.append(f"retries  {attempts} upstream create attempts"
                     + (f"; handling errors: {told}" if told else ""))  # fmt: skip
    after += [f"note     {note}" for note in timeline.get("notes") or []]
    return [*lines, "", output.table(HEADERS, rows(timeline)), "", *after]


async def fetch(api: Api, job_id: str) -> dict[str, Any]:
    """The job's timeline; CliError(REFUSED) when there is no such job for the key, or when the
    server has no timeline route (an older intake: its record still answers)."""
    response = await api.call("GET", f"/v1/jobs/{quote(job_id, safe='')}/timeline")
    if response.status_code == 404:
        await api.record(job_id)  # no such job: REFUSED, saying so
        raise CliError(REFUSED, f"{api.target.url} has no job timeline (an older intake): "
                                f"`clipline jobs show {job_id}` shows its history")  # fmt: skip
    if not response.is_success:
        raise refusal(f"timeline of {job_id}", response)
    try:
        found = response.json()
    except ValueError:
        found = None
    if not isinstance(found, dict) or not isinstance(found.get("steps"), list):
        raise CliError(UNREACHABLE, f"timeline of {job_id}: the answer is not a timeline")
    return found


async def timeline(args: argparse.Namespace) -> int:
    """Print the job's timeline: 0 when shown (whatever the job's outcome, as `jobs show`)."""
    job_id = _job_arg(args.job_id)
    async with Api(target(choice(args), args.home, args.tenant)) as api:
        found = await fetch(api, job_id)
    if args.json:
        output.line(json.dumps(found))
        return OK
    for line in summary(found):
        output.line(line)
    return OK


def add_commands(sub: Any) -> None:
    t = sub.add_parser(
        "timeline", parents=[_connection_options()],
        help="a job's life step by step: service, time, durations, cost, reason",
    )  # fmt: skip
    t.add_argument("job_id", help="the job id (job_...)")
    t.add_argument("--json", action="store_true", help="the timeline as JSON")
    t.set_defaults(func=lambda a: run(lambda: timeline(a)))

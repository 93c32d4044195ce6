"""Submission decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ATTEMPT_LEASE_SECONDS = 6.0
"""A create attempt renews its lease every third of this while it runs: a younger one is a
live attempt elsewhere (never reconciled or repeated), an older one was lost with its process."""
DEFAULT_RATE_LIMIT_DELAY = 1.0
MAX_RATE_LIMIT_DELAY = 120.0
CREATE_RETRY_CAP_SECONDS = 8.0
"""The longest backoff after a failed create (a 5xx, a dropped connection): the official
OpenAI SDK's own cap (its retries go 0.5 s, 1 s, ... up to 8 s). Longer waits protect the
upstream no better (every create, retried or not, still takes a slot of the shared rate,
rates.py, and honours every 429's Retry-After): they only made a job that met five 5xx in a
row wait 15.5 s of backoff, and the sixth 31.5 s."""


@dataclass(frozen=True, slots=True)
class Submit:
    """Create the upstream job."""


@dataclass(frozen=True, slots=True)
class Resend:
    """Already created upstream: announce it again (one fact id), create nothing."""

    upstream_id: str


@dataclass(frozen=True, slots=True)
class Skip:
    """The job ended or moved on meanwhile; nothing to do."""


@dataclass(frozen=True, slots=True)
class Reconcile:
    """A create may have reached the upstream (recorded `submitting`, no upstream id): look
    for it among the upstream's recent videos before any new create. `answer_lost`: the
    request surely reached the upstream and its answer was lost (a timeout, a dropped
    connection), so finding nothing is no proof that nothing was made."""

    answer_lost: bool = False


@dataclass(frozen=True, slots=True)
class InFlight:
    """Another worker's create attempt is alive: look again when its lease would run out."""

    retry_in: float


@dataclass(frozen=True, slots=True)
class Expired:
    """Admitted too long ago without getting upstream (a rate limit that never lifted)."""

    detail: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Asked to cancel, and no create of it is running: end it cancelled now (what its record
    says of the upstream decides the bill)."""


NOTHING_MADE = frozenset({"not_sent", "refused"})
"""Attempt outcomes (lifecycle.CreateOutcome values) after which nothing exists upstream."""


def plan(
    status: str | None,
    upstream_id: str | None,
    terminal: bool,
    *,
    waited: float,
    deadline: float,
    attempt_age: float | None = None,
    lease: float = ATTEMPT_LEASE_SECONDS,
    outcome: str | None = None,
) -> Submit | Reconcile | InFlight | Resend | Skip | Expired | Cancel:
    """What to do with an admitted job given its recorded state, `waited` s after admission,
    and what its latest create attempt said (`outcome`, a lifecycle.CreateOutcome value): a
    request that never left or was refused is sent again, a 5xx or a lost process is
    reconciled first, a lost answer is reconciled and never sent again. A job asked to cancel
    is cancelled, unless a create of it is running: that one's answer must be recorded first
    (whether the upstream job exists decides the bill), so it waits for it, or for its lease
    to run out (its process died: the bill is then disputed)."""
    if status is None or terminal:
        return Skip()
    if status == "cancelling":
        if outcome == "in_flight" and attempt_age is not None and attempt_age < lease:
            return InFlight(min(lease, lease - attempt_age))
        return Cancel()
    if upstream_id:
        # `submitted` (and past it) with an upstream id: created. Its announcement may be the
        # one a process lost, dying between recording and announcing, while a webhook moved the
        # job on: announced again (the same fact id: JetStream keeps one), created never.
        return Resend(upstream_id)
    if status not in ("admitted", "submitting"):
        return Skip()
    if status == "submitting" and attempt_age is not None and attempt_age < lease:
        # A lease from the future (clocks that differ or stepped back) is still a live one.
        return InFlight(min(lease, lease - attempt_age))
    if waited > deadline:
        return Expired(f"not submitted within {deadline:.0f}s of admission")
    if status == "admitted" or outcome in NOTHING_MADE:
        return Submit()
    return Reconcile(answer_lost=outcome == "no_answer")


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the job asked the upstream to create. `seconds` is the length of the video it
    makes (an extension's stitched total: what the upstream lists); `source_video` the
    upstream video a remix, edit or extension was made from."""

    model: str
    size: str
    seconds: int
    prompt: str
    source_video: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """An upstream video as listed (fields may be missing from a gateway's answer)."""

    id: str
    model: str | None
    size: str | None
    seconds: str | None
    prompt: str | None
    created_at: int | None
    remixed_from: str | None = None


@dataclass(frozen=True, slots=True)
class Adopt:
    """Exactly one upstream video is this job's lost create: take it, create nothing."""

    upstream_id: str


@dataclass(frozen=True, slots=True)
class NoMatch:
    """No upstream video is this job's: the earlier attempt created nothing."""


@dataclass(frozen=True, slots=True)
class Ambiguous:
    """Several videos could be this job's: creating or adopting could pay twice."""

    detail: str


CLOCK_SLACK_SECONDS = 120
"""Upstream and local clocks may disagree: a video this much older than the first attempt
still counts as a candidate."""


def matching(want: Wanted, first_attempt: float, videos: Iterable[Candidate]) -> list[str]:
    """Ids of listed videos that could be the job's create: same request, made no earlier than
    the first attempt (epoch seconds, less clock slack). A video listed as remixed from
    another is only ever a remix (or edit, or extension) of that one: never a generate's."""
    return [
        v.id
        for v in videos
        if v.prompt == want.prompt
        and v.model in (None, want.model)
        and v.size in (None, want.size)
        and v.seconds in (None, str(want.seconds))
        and v.remixed_from in (None, want.source_video)
        and (v.created_at is None or v.created_at >= first_attempt - CLOCK_SLACK_SECONDS)
    ]


def reconcile(
    candidates: list[str], owned_elsewhere: frozenset[str], *, answer_lost: bool = False
) -> Adopt | NoMatch | Ambiguous:
    """Which upstream video, if any, is the job's, given the ids other jobs already own. When
    the create surely reached the upstream (`answer_lost`), no match is no proof that nothing
    was made (more creates since than a listing shows, a video listed late): ambiguous."""
    free = [c for c in candidates if c not in owned_elsewhere]
    if not free and answer_lost:
        return Ambiguous(
            "the create reached the upstream and its answer was lost, and no unowned upstream "
            "video matches it: creating again could pay twice"
        )
    if not free:
        return NoMatch()
    if len(free) == 1:
        return Adopt(free[0])
    return Ambiguous(f"{len(free)} upstream videos match this job's request: {', '.join(free)}")


@dataclass(frozen=True, slots=True)
class Rejected:
    """The upstream refused the create for good (4xx): the job fails with its reason."""

    reason: str
    detail: str


UPSTREAM_OWN_REASONS = frozenset({"moderation_blocked"})
"""Upstream error codes that are reasons of clipline's own (billing and clients know them)."""


def rejection(
    status: int | None, code: str | None, message: str, *, source: str | None = None
) -> Rejected:
    """Why a refused create fails its job: the upstream's code as the reason when clipline
    knows it (moderation), else `upstream_rejected`; the detail names status and code. A
    remix, edit or extension (made from upstream video `source`) answered 404 has lost its
    source: `source_gone`."""
    said = " ".join(str(part) for part in (status, code) if part is not None)
    if source is not None and status == 404:
        return Rejected("source_gone", f"the source video {source} is gone upstream ({said})")
    reason = code if code in UPSTREAM_OWN_REASONS else "upstream_rejected"
    return Rejected(reason, f"{said}: {message}" if said else message)


def source_problem(
    kind: str, source_job_id: str | None, found: bool, upstream_id: str | None
) -> str | None:
    """Why a remix, edit or extension cannot be sent (None: it can, from `upstream_id`): its
    source job's record is gone, or names no upstream video (or one off the contract)."""
    if kind == "generate":
        return None
    if not found:
        return f"the source job {source_job_id} has no record"
    if upstream_id is None:
        return f"the source job {source_job_id} has no upstream video to {kind}"
    return None


def rate_limit_delay(retry_after_seconds: float | None) -> float:
    """How long to wait after a 429: the server's hint, bounded, else a default."""
    if retry_after_seconds is None or retry_after_seconds <= 0:
        return DEFAULT_RATE_LIMIT_DELAY
    return min(retry_after_seconds, MAX_RATE_LIMIT_DELAY)

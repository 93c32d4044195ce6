"""Pricing and admission decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from services.pricing_guard.budgets import Charge, Dispute, Release, Settlement
from shared.registry import ModelSpec, ProviderSpec


@dataclass(frozen=True, slots=True)
class Admitted:
    cost_micros: int


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # machine-readable, e.g. "unpriced"
    detail: str  # one human sentence


def retired_detail(model: str, spec: ModelSpec, provider: str) -> str:
    """Why a retired model (as the job named it) is refused, and what to use instead."""
    when = f" on {spec.shutdown.isoformat()}" if spec.shutdown is not None else ""
    instead = f"use {spec.replacement}" if spec.replacement else "no replacement was named"
    return f"{model} was retired by {provider}{when}; {instead}"


def price(
    provider: ProviderSpec, model: str, size: str, seconds: int, today: date
) -> Admitted | Refused:
    """Cost of a job in integer micro-dollars. A model its provider has retired by `today` is
    refused before any price is looked at; a model/size without a price is refused, never $0.
    `seconds` is what the job makes itself (clipline's policy): a remix's or edit's inherited
    length, an extension's added segment (not the stitched total)."""
    spec = provider.model(model)
    if spec is not None and spec.retired_on(today):
        return Refused("model_retired", retired_detail(model, spec, provider.name))
    per_second = provider.price_micros_per_second(model, size)
    if per_second is None:
        return Refused("unpriced", f"no price for {model} at {size}; refusing to run it unpriced")
    if seconds <= 0:
        return Refused("invalid_request", f"seconds must be positive, got {seconds}")
    return Admitted(per_second * seconds)


# -- billing policy (README "Billing policy" is this table in prose) -----------------------------

POLLER_OWN_REASONS = frozenset(
    {
        "upstream_lost",
        "upstream_rejected",
        "upstream_protocol",
        "retries_exhausted",
        "poison_message",
    }
)
"""Reasons the poller ends a job for on its own account while the upstream job may still run;
any other poller reason is the failure code the upstream reported for the generation."""
UPSTREAM_EXISTS = frozenset({"submitted", "generating", "generated", "storing"})
"""Statuses (history keys) in which an upstream job surely exists (lifecycle.UPSTREAM_STARTED)."""
CREATE_SENT = UPSTREAM_EXISTS | {"submitting"}
"""Statuses (history keys) after which an upstream create may have been sent: the evidence
for a record that does not say itself (`create_may_exist` None, written before it existed)."""
NOTHING_SENT_REASONS = frozenset({"input_unavailable"})
GENERATED_REASONS = frozenset({"asset_expired"})
"""Endings that say the upstream finished the video (billed) before clipline could keep it."""
"""Submitter endings decided before the create request left."""


@dataclass(frozen=True, slots=True)
class Ending:
    """What settlement needs to know about a job that ended."""

    status: str  # completed, failed, timed_out, cancelled
    reason: str | None
    stage: str | None
    reached: frozenset[str]  # every status the job was ever in (its history)
    estimate_micros: int
    requested_seconds: int
    produced_seconds: int | None
    create_may_exist: bool | None = None
    """What the record says of its latest create attempt (JobRecordV1.create_may_exist): False
    when it never left or the upstream refused it (429, 4xx); None when the record does not
    say, and then `reached` is the evidence."""
    upstream_known: bool = False
    """The record names an upstream job: it surely exists, even if the job never reached
    `submitted` (a create that answered after the job was asked to cancel)."""
    base_seconds: int = 0
    """Seconds of the produced video this job did not make: an extension's upstream reports
    the stitched total, of which only what it added is its own (clipline's policy)."""

    @property
    def billed_seconds(self) -> int:
        """The seconds a finished video is billed for: what the upstream produced (less what
        an extension's source already was), else what was asked for."""
        if self.produced_seconds is None or self.produced_seconds - self.base_seconds <= 0:
            return self.requested_seconds
        return self.produced_seconds - self.base_seconds

    @property
    def upstream_exists(self) -> bool:
        return self.upstream_known or bool(self.reached & UPSTREAM_EXISTS)

    @property
    def create_sent(self) -> bool:
        """Whether an upstream create may exist: the record's own word, else its history."""
        if self.upstream_exists:
            return True
        if self.create_may_exist is not None:
            return self.create_may_exist
        return bool(self.reached & CREATE_SENT)


def bill(ending: Ending) -> Settlement:
    """The billing policy: what a job that ended costs, by how it ended."""
    if (
        ending.status == "completed"
        or "generated" in ending.reached
        or ending.reason in GENERATED_REASONS
    ):
        # The provider bills a finished video, stored by clipline or not (asset expired).
        seconds = ending.billed_seconds
        per_second = ending.estimate_micros // ending.requested_seconds
        return Charge(per_second * seconds, f"{seconds} s produced")
    if not ending.create_sent:
        return Release("ended before any upstream create")
    if ending.reason == "moderation_blocked":
        return Release("blocked by moderation: unbilled")
    submitted = ending.upstream_exists
    if ending.status == "cancelled":
        if submitted:
            return Charge(ending.estimate_micros, "cancelled after submission: sunk cost")
        return Dispute("cancelled while a create was in flight")
    if not submitted:
        if ending.stage == "submitter" and ending.reason == "upstream_rejected":
            return Release("the upstream refused the create")
        if ending.stage == "submitter" and ending.reason in NOTHING_SENT_REASONS:
            return Release("ended before the create was sent")
        return Dispute("the create may have reached the upstream")
    poller_saw_failure = ending.stage == "poller" and ending.reason not in POLLER_OWN_REASONS
    if ending.status == "failed" and poller_saw_failure:
        return Release("the upstream reported the generation failed: unbilled")
    return Dispute("the upstream job may still run and bill")

"""Who may do what on NATS: one identity per service and per tenant, least privilege, declared once.

A service may publish only the event kinds it emits, consume only its own durable consumers, read
or write only the buckets it uses, and create, purge or delete no stream or bucket (the admin
identity of `clipline up` and migrations does that). A tenant lives in an account of its own that
imports from clipline's account only its request subject (a service import: its JetStream publish
is acknowledged back to it) and its own events (a stream import): its subjects, replies and inbox
are its own, it reaches no `$JS.API`, KV or object store, and it cannot name one of clipline's
subjects as a reply. tests/unit/test_identities.py checks these against the services' routers.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts.assets import ASSETS_SUBJECT_FILTER
from shared.contracts.events import (
    EVENT_TYPES,
    BudgetAlertV1,
    Event,
    JobAcceptedV1,
    JobAdmittedV1,
    JobCancelledV1,
    JobCancelRequestedV1,
    JobCompletedV1,
    JobFailedV1,
    JobGeneratedV1,
    JobProgressV1,
    JobRejectedV1,
    JobSubmittedV1,
    JobTimedOutV1,
)
from shared.contracts.requests import REQUEST_SUBJECT_PREFIX
from shared.natsjwt import Permissions
from shared.streams import (
    API_KEYS_BUCKET,
    BUDGETS_BUCKET,
    DURATIONS_BUCKET,
    INPUTS_BUCKET,
    JOBS_BUCKET,
    JOBS_STREAM_NAME,
    RATES_BUCKET,
    REQUESTS_STREAM_NAME,
    UPSTREAM_BUCKET,
    WEBHOOKS_BUCKET,
)

CLIPLINE_ACCOUNT = "CLIPLINE"
STREAM_SUBJECTS = {JOBS_STREAM_NAME: [Event.subject_filter_any()]}
"""What a `follows` identity may hear of a stream: the job events (v1) of every tenant."""
SYSTEM_ACCOUNT = "SYS"
INTAKE_REQUESTS_DURABLE = "intake--job-requested"
REQUESTS_EXPORT = f"{REQUEST_SUBJECT_PREFIX}.*"
TENANT_EVENTS: tuple[type[Event], ...] = tuple(e for e in EVENT_TYPES if e is not BudgetAlertV1)
"""The job events a tenant account receives: its jobs' lifecycle. Budget alerts are not among
them: an alert of a global or model window tells of every tenant's spend."""


@dataclass(frozen=True)
class ServiceIdentity:
    """What one service does on NATS."""

    name: str
    emits: tuple[type[Event], ...]
    consumes: tuple[str, ...]
    """Durable consumer names on the jobs stream."""
    consumes_requests: tuple[str, ...] = ()
    """Durable consumer names on the requests stream (intake's)."""
    writes: tuple[str, ...] = ()
    """KV buckets it reads and writes."""
    reads: tuple[str, ...] = ()
    """KV buckets it only reads."""
    objects_write: tuple[str, ...] = ()
    objects_read: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    """Core NATS request subjects it sends to (the replies come to its own inbox)."""
    answers: tuple[str, ...] = ()
    """Core NATS request subjects it subscribes to and answers (a reply each)."""
    follows: tuple[str, ...] = ()
    """Streams whose messages it reads one by one (by sequence and subject) and whose subjects
    it hears as they are stored: intake replays, then follows, a job's events to an HTTP client
    (GET /v1/jobs/{id}/events)."""

    @property
    def inbox_prefix(self) -> str:
        """Its own inbox: replies to it are not readable by another identity."""
        return f"_INBOX_{self.name}"

    def permissions(self) -> Permissions:
        return service_permissions(self)


def _durables(service: str, *events: type[Event]) -> tuple[str, ...]:
    return tuple(e.durable(service) for e in events)


# Every service may fail a job (poison, spent error budget): each emits `failed`.
SERVICES: dict[str, ServiceIdentity] = {
    s.name: s
    for s in (
        ServiceIdentity(
            "intake",
            emits=(JobAcceptedV1, JobRejectedV1, JobCancelRequestedV1, JobFailedV1),
            consumes=(),
            consumes_requests=(INTAKE_REQUESTS_DURABLE,),
            writes=(JOBS_BUCKET, API_KEYS_BUCKET),  # keys: read, and their last use
            objects_write=(INPUTS_BUCKET,),
            requests=(ASSETS_SUBJECT_FILTER,),  # presign/delete, answered by storage
            follows=(JOBS_STREAM_NAME,),
        ),
        ServiceIdentity(
            "pricing_guard",
            emits=(JobAdmittedV1, JobRejectedV1, BudgetAlertV1, JobCancelledV1, JobFailedV1),
            consumes=_durables(
                "pricing_guard",
                JobAcceptedV1,
                JobCompletedV1,
                JobFailedV1,
                JobTimedOutV1,
                JobCancelledV1,
            ),
            writes=(JOBS_BUCKET, BUDGETS_BUCKET, API_KEYS_BUCKET),  # the admin API's keys
        ),
        ServiceIdentity(
            "submitter",
            emits=(JobSubmittedV1, JobTimedOutV1, JobCancelledV1, JobFailedV1),
            consumes=_durables("submitter", JobAdmittedV1, JobCancelRequestedV1),
            writes=(JOBS_BUCKET, RATES_BUCKET, UPSTREAM_BUCKET),
            objects_read=(INPUTS_BUCKET,),
        ),
        ServiceIdentity(
            "poller",
            emits=(JobProgressV1, JobGeneratedV1, JobTimedOutV1, JobCancelledV1, JobFailedV1),
            consumes=_durables("poller", JobSubmittedV1),
            writes=(JOBS_BUCKET, WEBHOOKS_BUCKET, DURATIONS_BUCKET),
            reads=(UPSTREAM_BUCKET,),
        ),
        ServiceIdentity(
            "storage",
            emits=(JobCompletedV1, JobCancelledV1, JobFailedV1),
            consumes=_durables("storage", JobGeneratedV1),
            writes=(JOBS_BUCKET,),
            answers=(ASSETS_SUBJECT_FILTER,),
        ),
    )
}


def _stream_read(stream: str) -> list[str]:
    """Read a stream's messages (KV get, object meta, scans) without changing the stream."""
    api = "$JS.API"
    return [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        # ephemeral consumers: scans of a bucket, object-store reads
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{api}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]


def service_permissions(identity: ServiceIdentity) -> Permissions:
    pub: list[str] = [e.subject_filter(tenant="*", job_id="*") for e in identity.emits]
    durables = [(JOBS_STREAM_NAME, d) for d in identity.consumes] + [
        (REQUESTS_STREAM_NAME, d) for d in identity.consumes_requests
    ]
    for stream, durable in durables:
        pub += [
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    # Every service checks at start that the streams it uses exist (none may create them).
    pub += [f"$JS.API.STREAM.INFO.{s}" for s in {JOBS_STREAM_NAME, *(s for s, _ in durables)}]
    for bucket in identity.writes:
        pub += [*_stream_read(f"KV_{bucket}"), f"$KV.{bucket}.>"]
    for bucket in identity.reads:
        pub += _stream_read(f"KV_{bucket}")
    for bucket in identity.objects_write:
        # Objects are put once, never replaced (shared.inputs): no purge of old chunks.
        pub += [*_stream_read(f"OBJ_{bucket}"), f"$O.{bucket}.>"]
    for bucket in identity.objects_read:
        pub += _stream_read(f"OBJ_{bucket}")
    sub: list[str] = [f"{identity.inbox_prefix}.>"]
    for stream in identity.follows:
        # A message read (`MSG.GET`, with `next_by_subj`) changes nothing. Not a consumer:
        # the create subject that takes no name (`CONSUMER.CREATE.<stream>`) still applies a
        # config naming an existing durable of another service as an update of that durable
        # (tests/security/test_intake_follow.py); no permission on subjects can prevent it.
        pub.append(f"$JS.API.STREAM.MSG.GET.{stream}")
        sub += STREAM_SUBJECTS[stream]
    if identity.objects_read or identity.objects_write:
        # nats-py's object-store get finds the stream of the chunks' subject by name lookup
        pub.append("$JS.API.STREAM.NAMES")
    pub += identity.requests
    sub += identity.answers
    return Permissions(pub=tuple(pub), sub=tuple(sub), responds=bool(identity.answers))


def tenant_permissions(tenant: str) -> Permissions:
    """A tenant's user, inside the tenant's own account: its request subject, its events, its
    inbox (the account's own, so the default `_INBOX` prefix works with plain nats-py)."""
    return Permissions(
        pub=(f"{REQUEST_SUBJECT_PREFIX}.{tenant}",),
        sub=(Event.subject_filter_any(tenant), "_INBOX.>"),
    )


def clipline_exports() -> list[dict[str, object]]:
    """What clipline's account offers tenant accounts: the request subjects (a service, so the
    stream's publish acknowledgement flows back) and the events (a stream)."""
    requests: dict[str, object] = {
        "name": "requests",
        "subject": REQUESTS_EXPORT,
        "type": "service",
        "response_type": "Singleton",
    }
    events: list[dict[str, object]] = [
        {"name": f"events-{e.kind}", "subject": e.subject_filter(), "type": "stream"}
        for e in TENANT_EVENTS
    ]
    return [requests, *events]


def tenant_imports(tenant: str, clipline_account: str) -> list[dict[str, object]]:
    """A tenant account's imports: only its own request subject and its own events."""
    requests: dict[str, object] = {
        "name": "requests",
        "subject": f"{REQUEST_SUBJECT_PREFIX}.{tenant}",
        "account": clipline_account,
        "type": "service",
    }
    events: list[dict[str, object]] = [
        {
            "name": f"events-{e.kind}",
            "subject": e.subject_filter(tenant),
            "account": clipline_account,
            "type": "stream",
        }
        for e in TENANT_EVENTS
    ]
    return [requests, *events]


__all__ = [
    "CLIPLINE_ACCOUNT",
    "INTAKE_REQUESTS_DURABLE",
    "SERVICES",
    "SYSTEM_ACCOUNT",
    "ServiceIdentity",
    "clipline_exports",
    "service_permissions",
    "tenant_imports",
    "tenant_permissions",
]

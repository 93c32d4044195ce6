"""Every stream, KV bucket and object store, declared once with its full configuration."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from faststream.nats import JStream
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from shared.contracts.events import EVENT_TYPES, SUBJECT_ROOT

JOBS_STREAM_NAME = "CLIPLINE_JOBS"
JOBS_SUBJECTS = [
    # Events only of known kinds: a publish of an unknown kind gets no stream ack (the
    # publisher sees the error at once) instead of being stored where nobody consumes it.
    *(e.subject_filter() for e in EVENT_TYPES),
]
REQUESTS_STREAM_NAME = "CLIPLINE_REQUESTS"
REQUESTS_SUBJECTS = [
    # Requests of every version, with or without a tenant token: intake consumes them all and
    # rejects what it cannot take (no tenant, unknown version) with a reason.
    f"{SUBJECT_ROOT}.requested.>",
]
"""Tenants publish here, and only here: a stream of its own, so a tenant's Nats-Msg-Id never
shares a duplicate window with the events (whose ids are computable from the job id: a
tenant naming one first would have the real event dropped as a duplicate)."""
DUPLICATE_WINDOW_SECONDS = 3600.0
"""How long a publish repeating a Nats-Msg-Id is dropped: a fact reached again within the hour
(a late redelivery, a webhook after a poll) is stored once; after that a repeat is stored, and
every consumer, idempotent by job state, changes nothing for it."""
JOBS_MAX_AGE_SECONDS = 7 * 24 * 3600.0


def _stream(name: str, subjects: list[str]) -> tuple[JStream, StreamConfig]:
    """A stream as FastStream's subscribers name it and as ensure_jetstream declares it: file
    storage, the hour's dedup window, a week's age."""
    # declare=False: ensure_jetstream declares it before any consumer starts, so FastStream
    # never re-declares it with a different subject list (which the server would refuse).
    declared = JStream(
        name, subjects=list(subjects), storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS, max_age=JOBS_MAX_AGE_SECONDS, declare=False,
    )  # fmt: skip
    config = StreamConfig(
        name=name, subjects=list(subjects), storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS, max_age=JOBS_MAX_AGE_SECONDS,
    )  # fmt: skip
    return declared, config


JOBS, JOBS_STREAM_CONFIG = _stream(JOBS_STREAM_NAME, JOBS_SUBJECTS)
REQUESTS, REQUESTS_STREAM_CONFIG = _stream(REQUESTS_STREAM_NAME, REQUESTS_SUBJECTS)

JOBS_BUCKET = "clipline_jobs"
JOBS_BUCKET_CONFIG = KeyValueConfig(
    bucket=JOBS_BUCKET,
    description="current state of every job (JobRecordV1), updated with compare-and-set",
    history=8,
    storage=StorageType.FILE,
    direct=True,
)


UPSTREAM_BUCKET = "clipline_upstream"
UPSTREAM_BUCKET_CONFIG = KeyValueConfig(
    bucket=UPSTREAM_BUCKET,
    description="upstream video id -> <tenant>.<job_id> (webhooks carry only the video id)",
    history=1,
    storage=StorageType.FILE,
    direct=True,
)

WEBHOOK_REPLAY_WINDOW_SECONDS = 15 * 60.0
"""How long a processed webhook id is remembered: longer than the 5-minute timestamp tolerance
of Standard Webhooks (either way), so a replay is refused as a replay or as stale, never taken."""
WEBHOOKS_BUCKET = "clipline_webhooks"
WEBHOOKS_BUCKET_CONFIG = KeyValueConfig(
    bucket=WEBHOOKS_BUCKET,
    description="webhook ids the poller accepted (claimed by create), forgotten after the ttl",
    history=1,
    ttl=WEBHOOK_REPLAY_WINDOW_SECONDS,
    storage=StorageType.FILE,
    direct=True,
)

BUDGETS_BUCKET = "clipline_budgets"
BUDGETS_BUCKET_CONFIG = KeyValueConfig(
    bucket=BUDGETS_BUCKET,
    description="budget limits, window counters, job reservations, spend ledger (pricing_guard)",
    history=1,
    storage=StorageType.FILE,
    direct=True,
)
"""Written only by atomic batches (shared/kvatomic.py): its stream allows atomic publish."""

RATES_BUCKET = "clipline_rates"
RATES_BUCKET_CONFIG = KeyValueConfig(
    bucket=RATES_BUCKET,
    description="the submitters' shared rate state per provider/model (tokens, creates in flight)",
    history=1,
    # On disk, like every bucket: a memory stream would vanish when nats-server restarts, and
    # the submitters would find no bucket until they restarted too.
    storage=StorageType.FILE,
    direct=True,
)

DURATIONS_BUCKET = "clipline_durations"
DURATIONS_BUCKET_CONFIG = KeyValueConfig(
    bucket=DURATIONS_BUCKET,
    description="recent upstream generation times per provider/model/size/seconds (poller)",
    history=1,
    storage=StorageType.FILE,
    direct=True,
)

API_KEYS_BUCKET = "clipline_api_keys"
API_KEYS_BUCKET_CONFIG = KeyValueConfig(
    bucket=API_KEYS_BUCKET,
    description="API keys of intake's HTTP API by key id: tenant, name, sha256 of the secret, "
    "created/last used/revoked (written by pricing_guard's admin API; read and touched by intake)",
    history=1,
    storage=StorageType.FILE,
    direct=True,
)

CALLBACKS_BUCKET = "clipline_callbacks"
CALLBACKS_BUCKET_CONFIG = KeyValueConfig(
    bucket=CALLBACKS_BUCKET,
    description="caller webhooks: each tenant's endpoint and signing secret (tenant.<tenant>, "
    "written by the admin CLI) and each job's delivery state (job.<tenant>.<job_id>, intake)",
    history=1,
    storage=StorageType.FILE,
    direct=True,
)
"""Holds signing secrets: readable only by the admin identity and intake (shared.identities)."""

INPUTS_BUCKET = "clipline_inputs"
INPUTS_BUCKET_CONFIG = ObjectStoreConfig(
    bucket=INPUTS_BUCKET,
    description="input_reference images of jobs, by job id (kept for the stream's max age)",
    ttl=JOBS_MAX_AGE_SECONDS,
    storage=StorageType.FILE,
)
KV_BUCKETS = (
    JOBS_BUCKET_CONFIG,
    UPSTREAM_BUCKET_CONFIG,
    WEBHOOKS_BUCKET_CONFIG,
    BUDGETS_BUCKET_CONFIG,
    RATES_BUCKET_CONFIG,
    DURATIONS_BUCKET_CONFIG,
    API_KEYS_BUCKET_CONFIG,
    CALLBACKS_BUCKET_CONFIG,
)
"""Every KV bucket: each allows direct gets (`direct=True`, the stream's `allow_direct`), so a
read is one request to `$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>` answered with the
value and its revision (nats-py's KeyValue uses it when the stream allows it), never a
`$JS.API.STREAM.MSG.GET` (a JetStream API call, which also publishes an advisory); except, on a
cluster, the LEADER_READS buckets."""
LEADER_READS = (JOBS_BUCKET, UPSTREAM_BUCKET)
"""Buckets read from the stream's leader when replicated: no direct gets. A direct get on a
replicated stream may be answered by a follower that has not yet applied the latest write, so a
service reading a job's record right after the event of its newest step could find the record
without that step (or no record at all) and drop the event as not borne out by the record: the
chaos suite lost jobs so on a 3-node cluster. A `$JS.API.STREAM.MSG.GET` goes to the leader,
which has every acknowledged write. On one server (R1) the leader is the only copy: direct."""
MAX_REPLICAS = 5
"""JetStream keeps a stream on at most 5 servers."""
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
"""nats-server max_payload clipline runs with: a request may carry an input image (data URL)."""


async def ensure_jetstream(js: JetStreamContext, replicas: int | None = None) -> None:
    """Create the streams, KV buckets and object store if missing (idempotent; run on start),
    each kept on `replicas` servers (1: one server; 3 on a 3-node cluster, where a node may go
    down with nothing lost); one made before at another count is moved to it. None: each keeps
    the count it has (a new one: 1), so provisioning again without a count never shrinks a
    cluster's. The jobs stream first: one declared before requests had their own stream gives
    their subjects up before the requests stream takes them."""
    if replicas is not None and not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replicas must be 1 to {MAX_REPLICAS} (JetStream's), not {replicas}")
    for declared in (JOBS_STREAM_CONFIG, REQUESTS_STREAM_CONFIG):
        count = await _count(js, declared.name or "", replicas)
        config = replace(declared, num_replicas=count)
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Already exists with this name: update to the declared configuration.
            await js.update_stream(config)
    for bucket in KV_BUCKETS:
        count = await _count(js, f"KV_{bucket.bucket}", replicas)
        direct = bool(bucket.direct) and not (count > 1 and bucket.bucket in LEADER_READS)
        await ensure_bucket(
            js,
            replace(bucket, replicas=count, direct=direct),
            atomic=bucket is BUDGETS_BUCKET_CONFIG,
        )
    stream = f"OBJ_{INPUTS_BUCKET}"
    count = await _count(js, stream, replicas)
    with contextlib.suppress(NotFoundError):  # moved first, so the create below matches it
        await _ensure_replicas(js, stream, count)
    # nats-py overwrites config.bucket with the `bucket` argument, so pass both. An existing
    # store whose other settings differ from the declared ones is refused here, loudly.
    inputs = replace(INPUTS_BUCKET_CONFIG, replicas=count)
    await js.create_object_store(INPUTS_BUCKET, config=inputs)
    for made in (JOBS_STREAM_NAME, REQUESTS_STREAM_NAME, stream):  # a service's start asks
        await _visible(js, made)


async def _count(js: JetStreamContext, stream: str, replicas: int | None) -> int:
    """The replica count to keep `stream` at: `replicas`, else the one it has (new: 1)."""
    if replicas is not None:
        return replicas
    try:
        return (await js.stream_info(stream)).config.num_replicas or 1
    except NotFoundError:
        return 1


CREATED_VISIBLE_SECONDS = 30.0


async def _visible(js: JetStreamContext, stream: str) -> None:
    """Wait until a stream just created answers `stream_info`: on a cluster the create is
    acknowledged by the meta leader before the stream's own group has a leader to answer (a
    loaded 3-node stack answered "stream not found" right after the create)."""
    deadline = asyncio.get_running_loop().time() + CREATED_VISIBLE_SECONDS
    while True:
        try:
            await js.stream_info(stream)
            return
        except NotFoundError:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.2)  # polling the stream's appearance, with a deadline


async def _ensure_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """The stream kept on `replicas` servers: JetStream moves it (R1 -> R3 copies it to two
    more servers; R3 -> R1 drops two copies) without stopping its readers and writers."""
    info = await js.stream_info(stream)
    if info.config.num_replicas != replicas:
        info.config.num_replicas = replicas
        await js.update_stream(info.config)


async def ensure_bucket(
    js: JetStreamContext, config: KeyValueConfig, *, atomic: bool = False
) -> None:
    """A KV bucket as declared, created if missing, and a bucket of an older deployment brought
    up to date: `allow_direct` (reads are direct gets: no JetStream API request or advisory
    per read) and, with `atomic`, `allow_atomic` (multi-key compare-and-set; nats-server 2.12+).
    nats-py can create neither flag's absence away: re-creating a bucket whose config differs
    fails, so the stream is updated instead."""
    stream = f"KV_{config.bucket}"
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        with contextlib.suppress(BadRequestError):  # another process created it meanwhile
            await js.create_key_value(config)
        await _visible(js, stream)
    await _ensure_replicas(js, stream, config.replicas)
    info = await js.stream_info(stream)
    if bool(info.config.allow_direct) != bool(config.direct):  # LEADER_READS on a cluster
        info.config.allow_direct = bool(config.direct)
        await js.update_stream(info.config)
        info = await js.stream_info(stream)
    wanted = {"allow_direct": bool(config.direct), "allow_atomic": atomic}
    missing = {flag for flag, on in wanted.items() if on and not getattr(info.config, flag)}
    if not missing:
        return
    for flag in missing:
        setattr(info.config, flag, True)
    await js.update_stream(info.config)
    updated = (await js.stream_info(stream)).config
    if not all(getattr(updated, flag) for flag in missing):
        raise RuntimeError(
            f"stream {stream} cannot allow {', '.join(sorted(missing))}: nats-server 2.12 or "
            "newer is needed (budgets change several keys at once)"
        )


async def ensure_atomic_bucket(js: JetStreamContext, config: KeyValueConfig) -> None:
    """A KV bucket whose stream allows atomic batches (shared/kvatomic.py), and direct gets."""
    await ensure_bucket(js, config, atomic=True)

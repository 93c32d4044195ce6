"""poller adapters, in JetStream KV buckets: webhook ids taken (compare-and-set create) and
the generation times learned per kind of job (compare-and-set update, read through a cache);
and the ack of a delivery held in a delayed nak."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.poller.schedule import MIN_SAMPLES, Durations, expected_seconds, observe
from shared.contracts import JobSpec
from shared.kvcell import KvCells
from shared.registry import ProviderSpec

log = logging.getLogger("clipline.poller")


CLAIM_STALE_SECONDS = 5.0
"""A claim neither done nor renewed this long is its taker's death (a live taker renews it every
webhooks.CLAIM_RENEW_SECONDS while its look runs): the sender's retry may take it over. Short,
because a sender backs off (the simulator as the OpenAI API: 1, 2, 4, 8 s...): a claim left by
a poller killed mid-look must be free by the retry after its restart, or the job waits for the
one after (seen in CI: 10 s here cost a job 12 s after the restart). Taking over a live but
slow taker's claim costs one more look, which changes nothing (the record write is a
compare-and-set)."""
TAKING, DONE = b"taking ", b"done"
WRONG_LAST_SEQUENCE = 10071


class KvSeenWebhooks:
    """SeenWebhooks and EarlyWebhooks on the clipline_webhooks bucket, whose ttl outlives the
    timestamp tolerance. `create` (and `update` at the revision read) succeeds for one writer
    only, so two replicas never both take an id."""

    def __init__(
        self, kv: Callable[[], Awaitable[KeyValue]], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv = kv
        self._clock = clock
        self._taken: dict[str, int] = {}  # this receiver's claims in progress: key -> revision

    async def claim(self, webhook_id: str) -> bool:
        kv, key = await self._kv(), _key(webhook_id)
        taking = TAKING + str(self._clock()).encode()
        try:
            self._taken[key] = await kv.create(key, taking)
        except KeyWrongLastSequenceError:
            return await self._take_over(kv, key, taking)
        return True

    async def _take_over(self, kv: KeyValue, key: str, taking: bytes) -> bool:
        """Take a claim whose taker died mid-way (stale and never done)."""
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # released meanwhile: the next retry takes it
            return False
        value = entry.value or b""
        if not value.startswith(TAKING):
            return False
        try:
            taken_at = float(value[len(TAKING) :])
        except ValueError:
            taken_at = 0.0
        if self._clock() - taken_at < CLAIM_STALE_SECONDS:
            return False
        try:
            self._taken[key] = await kv.update(key, taking, last=entry.revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def renew(self, webhook_id: str) -> None:
        key = _key(webhook_id)
        revision = self._taken.get(key)
        if revision is None:
            return
        taking = TAKING + str(self._clock()).encode()
        try:
            self._taken[key] = await (await self._kv()).update(key, taking, last=revision)
        except KeyWrongLastSequenceError:
            self._taken.pop(key, None)  # taken over meanwhile: no longer ours

    async def done(self, webhook_id: str) -> None:
        key = _key(webhook_id)
        self._taken.pop(key, None)
        await (await self._kv()).put(key, DONE)

    async def release(self, webhook_id: str) -> None:
        """Forget this receiver's own claim only: one taken over meanwhile (this one was slow,
        not dead) stays its new taker's."""
        key = _key(webhook_id)
        revision = self._taken.pop(key, None)
        if revision is None:
            return
        kv = await self._kv()
        try:
            await kv.delete(key, last=revision)
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            pass
        except BadRequestError as exc:  # nats-py 2.16 reports a lost delete race as a 400
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise

    async def tell(self, video_id: str) -> None:
        await (await self._kv()).put("told." + _key(video_id), b"1")

    async def told(self, video_id: str) -> bool:
        try:
            await (await self._kv()).get("told." + _key(video_id))
        except KeyNotFoundError:
            return False
        return True


ACK = b"+ACK"


class NatsTimerAcks:
    """TimerAcks on the service's NATS connection: `+ACK` published to the delivery's ack
    subject, as nats-py's Msg.ack does (whose own message object refuses a second answer after
    its nak). nats-server drops a message acked in its delayed nak: nothing is redelivered."""

    def __init__(self, connection: Callable[[], Client]) -> None:
        self._connection = connection

    async def ack(self, reply: str) -> None:
        if not reply.startswith("$JS.ACK."):
            raise ValueError(f"not a JetStream ack subject: {reply[:80]!r}")
        await self._connection().publish(reply, ACK)


def _key(text: str) -> str:
    """Ids are the sender's, of any length and alphabet: keyed by their digest."""
    return hashlib.sha256(text.encode()).hexdigest()


class KvExpectations:
    """Expectations on the clipline_durations bucket: one key per provider, model, size and
    seconds, holding the recent durations; every replica learns from every finished job. Reads
    go through a cache of `ttl` seconds (the expectation moves slowly; a poll must not cost a
    KV read). The registry's generation time is the guess until enough jobs have finished.

    Samples are written in batches: at once while a kind has too few to replace the guess,
    then at most once per `flush_every` seconds per kind (on the next finished job or look),
    so the shared key costs a read and a write per batch, not per job. A replica that dies
    loses the samples it had not written yet: they only refine an estimate."""

    def __init__(
        self,
        kv: Callable[[], Awaitable[KeyValue]],
        provider: ProviderSpec,
        *,
        ttl: float = 30.0,
        flush_every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = kv
        self._provider = provider
        self._ttl = ttl
        self._flush_every = flush_every
        self._clock = clock
        self._cache: dict[str, tuple[float, Durations]] = {}
        self._pending: dict[str, list[tuple[float, str]]] = {}
        self._flushed: dict[str, float] = {}
        self._cells = KvCells(kv, _durations_or_none, _encode_durations, max_attempts=16)

    async def expected(self, spec: JobSpec) -> float:
        key = self._key(spec)
        try:
            await self._flush_if_due(key)
        except Exception as exc:  # kept for the next flush; the expectation is still known
            log.warning("poller: could not write durations %s: %s", key, exc)
        cached = self._cache.get(key)
        if cached is None or self._clock() - cached[0] > self._ttl:
            try:
                entry = await (await self._kv()).get(key)
                durations = _durations(key, entry.value)
            except KeyNotFoundError:
                durations = Durations()
            except Exception as exc:  # the store unreachable: keep what was known, or guess
                log.warning("poller: could not read durations %s: %s", key, exc)
                durations = cached[1] if cached is not None else Durations()
            cached = (self._clock(), self._with_pending(key, durations))
            self._cache[key] = cached
        return expected_seconds(cached[1], self._seed(spec))

    async def finished(self, spec: JobSpec, video_id: str, took: float) -> None:
        key = self._key(spec)
        self._pending.setdefault(key, []).append((took, video_id))
        cached = self._cache.get(key)
        if cached is not None:  # this replica knows at once; others on the next flush
            self._cache[key] = (cached[0], observe(cached[1], took, video_id))
        await self._flush_if_due(key)

    async def flush(self) -> None:
        """Write every kind's pending samples now (e.g. before the process stops)."""
        for key in list(self._pending):
            await self._write(key)

    async def _flush_if_due(self, key: str) -> None:
        if not self._pending.get(key):
            return
        cached = self._cache.get(key)
        learning = cached is None or len(cached[1].samples) <= MIN_SAMPLES
        if learning or self._clock() - self._flushed.get(key, -math.inf) >= self._flush_every:
            await self._write(key)

    async def _write(self, key: str) -> None:
        batch = self._pending.pop(key, [])
        if not batch:
            return

        def add(known: Durations | None) -> tuple[Durations | None, Durations]:
            known = known or Durations()
            learned = known
            for took, video_id in batch:
                learned = observe(learned, took, video_id)
            if learned == known:
                return None, known  # counted already: no write
            return learned, learned

        # No read unless another replica wrote meanwhile (shared/kvcell.py).
        try:
            learned = await self._cells.change(key, add)
        except BaseException:
            self._pending.setdefault(key, [])[:0] = batch  # kept for the next flush
            raise
        self._flushed[key] = self._clock()
        self._cache[key] = (self._clock(), learned)

    def _with_pending(self, key: str, durations: Durations) -> Durations:
        for took, video_id in self._pending.get(key, []):
            durations = observe(durations, took, video_id)
        return durations

    def _seed(self, spec: JobSpec) -> float:
        model = self._provider.model(spec.model)
        generation = model.generation if model is not None else self._provider.generation
        return generation.expected_seconds(spec.seconds)

    def _key(self, spec: JobSpec) -> str:
        model = self._provider.model(spec.model)
        name = model.name if model is not None else spec.model
        parts = (self._provider.name, name, spec.size, str(spec.seconds))
        return "took." + ".".join(_KEY_UNSAFE.sub("_", part) for part in parts)


_KEY_UNSAFE = re.compile(r"[^-\w]")


def _durations_or_none(key: str, value: bytes | None) -> Durations | None:
    return _durations(key, value) if value else None


def _encode_durations(durations: Durations) -> bytes:
    return json.dumps({"samples": durations.samples, "videos": durations.videos}).encode()


def _durations(key: str, value: bytes | None) -> Durations:
    """The stored durations; none when absent or unreadable (the registry's guess serves)."""
    if not value:
        return Durations()
    try:
        data = json.loads(value)
        pairs = list(zip(data["samples"], data.get("videos", []), strict=True))
        kept = [(float(s), str(v)) for s, v in pairs if 0 <= float(s) < 86400 * 7]
        return Durations(tuple(s for s, _ in kept), tuple(v for _, v in kept))
    except (ValueError, KeyError, TypeError):
        log.warning("poller: unreadable durations %s: starting afresh", key)
        return Durations()

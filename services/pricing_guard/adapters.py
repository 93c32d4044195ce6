"""Budgets in the clipline_budgets KV bucket: every change of money is one atomic multi-key
compare-and-set (the jobs' reservations with the counters of the limited scopes they touch and
the catalog of limits), so any number of pricing_guard replicas, and a crash at any point,
neither overshoot a limit nor leak a reservation.

What an admission or a settlement touches does not grow with the windows and scopes there are:
the catalog (one key holding every limit, read once per batch and checked by it, never written:
see `_write_guarded`), one counter key per limited scope (its limited periods together; a scope
or period without a limit keeps no counter), and the job's own keys. A window's usage without a
counter is folded from the reservations when asked (and when a limit is set on it, to start its
counter).

A job's own keys: its reservation lives under its `open` key while reserved (one write at
admission, expecting no revision at all) and moves to its `res` key when it closes (the `open`
key deleted, expecting the revision read: two writes); the closed reservation is the job's line
of the spend ledger. The `open` key's delete marker stays (the bucket keeps one revision of each
key), so an admission of a job decided before (reserved, refused or closed) can never reserve
it again: a job's `open` key at revision 0 means nothing was ever decided for it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.pricing_guard.budgets import (
    GLOBAL,
    PERIODS,
    Charge,
    Dispute,
    Exceeded,
    Limit,
    Period,
    Release,
    Reserve,
    Settlement,
    Slot,
    Usage,
    fold,
    newest,
    reserve,
    resolve_usage,
    scopes_of,
    settle_usage,
    slots_for,
    window,
    window_usage,
)
from services.pricing_guard.budgets import (
    Counted as CountedSlot,
)
from services.pricing_guard.observe import show_usage
from services.pricing_guard.ports import Claim, Reserved, Settled
from services.pricing_guard.records import (
    CATALOG_KEY,
    GUARD_KEY,
    LAYOUT_KEY,
    OPEN_MARKER,
    USAGE,
    Catalog,
    Counters,
    LimitEntry,
    LimitRecord,
    ReservationRecord,
    SpendEntry,
    counter_key,
    dispute_key,
    limit_key,
    open_key,
    reservation_key,
    usage_key,
)
from shared.kvatomic import AtomicConflictError, AtomicStore, Entry

Bill = Callable[[ReservationRecord], Settlement]
LINGER_SECONDS = 0.005
"""How long a batch waits for more admissions (or settlements) before it is written: a few
milliseconds on a decision that takes seconds end to end, for fewer batches (and writes of the
shared counters)."""
MAX_ATTEMPTS = 200
HOLD_PAUSE = 0.02
"""Seconds a job of a scope whose new limit's counter is being initialised waits before it
looks again (the initialisation takes one scan of the reservations)."""
PENDING_STALE = timedelta(seconds=30)
"""A limit pending this long lost the process initialising it: whoever waits on it does it."""

CONVERT_CHUNK = 100
"""Reservations of the older layout looked at (and converted) per batch, once per bucket."""

Kept = dict[Period, dict[str, Usage]]
Decision = Reserved | Exceeded
Job = tuple[str, str]
First = Literal["open", "res"]
"""Which of a job's keys to read first: where its reservation most likely is."""


@dataclass
class _State:
    """The catalog and the counters of some scopes as read, with what a write must expect."""

    catalog: Catalog
    revision: int
    """The catalog's revision read: a batch decided under it is guarded by it."""
    counters: dict[str, Kept]
    """Scope -> its counters (limited scopes only), mutable copies."""
    revisions: dict[str, int]
    """Counter key -> revision read."""
    entries: dict[str, Entry] = field(default_factory=dict)

    def expected(self, writes: Iterable[str]) -> dict[str, int]:
        """What the writes to the catalog and counters must expect."""
        found = {CATALOG_KEY: self.revision, **self.revisions}
        return {k: found[k] for k in writes if k in found}

    def counter_writes(self, scopes: Iterable[str]) -> dict[str, bytes | None]:
        return {
            counter_key(s): (
                Counters(windows={p: newest(w) for p, w in self.counters[s].items() if w})
                .model_dump_json()
                .encode()
                if any(self.counters[s].values())
                else None
            )
            for s in scopes
        }


@dataclass(frozen=True)
class _Ending:
    """A settlement asked for: move the job's reservation out of `state` by `bill`."""

    tenant: str
    job_id: str
    state: str
    bill: Bill
    outcome: str
    at: datetime
    first: First = "open"


@dataclass(frozen=True)
class _Found:
    """Where a job's reservation is: under its `open` key (reserved), its `res` key (closed,
    or reserved in the older layout, the `open` key then holding OPEN_MARKER or nothing), or
    nowhere; with the entries of the keys read (None: not read, the reservation is not there)."""

    record: ReservationRecord | None
    open: Entry | None
    res: Entry | None

    @property
    def under_open(self) -> bool:
        """The reservation is the `open` key's value (reserved, this layout)."""
        return self.record is not None and self.open is not None and _is_record(self.open.value)


def _is_record(value: bytes | None) -> bool:
    return value is not None and value != OPEN_MARKER


def _found(job: Job, entries: dict[str, Entry]) -> _Found | None:
    """The job's reservation from the keys read so far; None when the other key is needed."""
    o, r = entries.get(open_key(*job)), entries.get(reservation_key(*job))
    if o is not None and _is_record(o.value):
        return _Found(_parse(o.value), o, r)
    if r is not None and r.value is not None:
        record = _parse(r.value)
        if record.state != "reserved" or o is not None:
            return _Found(record, o, r)  # closed (or reserved in the older layout)
        return None  # reserved in the older layout: a settlement deletes its `open` key too
    if o is not None and o.value is None and o.revision == 0:
        return _Found(None, o, r)  # nothing was ever decided for the job
    if o is None or r is None:
        return None
    return _Found(None, o, r)


def _parse(value: bytes | None) -> ReservationRecord:
    return ReservationRecord.model_validate_json(value or b"")


def _still_reserved(value: bytes) -> bool:
    """Is this stored reservation `reserved`? (An unreadable one is taken as decided: reading
    it fails loudly wherever it is asked for, as before.)"""
    try:
        return _parse(value).state == "reserved"
    except ValueError:
        return False


class _Held:
    """The answer for a job that must wait: a limit of its scopes is pending."""


HELD = _Held()


class KvBudgets:
    """The BudgetStore on JetStream KV (tests run it on an in-memory AtomicStore).

    Admissions waiting at the same moment are decided together, in arrival order, and written
    in one atomic batch (group commit): one write of each limited scope's counters per batch,
    plus each job's reservation (its `open` key); the catalog is checked, not written."""

    def __init__(
        self, atomic: AtomicStore, *, max_group: int = 64, linger: float = LINGER_SECONDS
    ) -> None:
        self._atomic = atomic
        self._max_group = max_group
        self._linger = linger
        self._waiting: list[tuple[Claim, asyncio.Future[Decision]]] = []
        self._leader: asyncio.Task[None] | None = None
        self._endings: list[tuple[_Ending, asyncio.Future[Settled | None]]] = []
        self._closer: asyncio.Task[None] | None = None
        self._catalog = Catalog()  # the last one read: which counter keys to read with it
        self._converted = False
        self._layout_ready = False
        self._layout_lock = asyncio.Lock()

    # -- admission ---------------------------------------------------------------------------

    async def reserve(self, claim: Claim) -> Decision:
        """Reserve the claim's estimate in every limited window it counts against, or refuse."""
        decided: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting.append((claim, decided))
        if self._leader is None or self._leader.done():
            self._leader = asyncio.create_task(self._drain())
        return await asyncio.shield(decided)

    async def _drain(self) -> None:
        """Decide and write waiting claims, a group at a time, until none is left. A group
        that fails is tried again claim by claim, so one bad claim fails only itself. Claims
        of a scope whose new limit is being initialised wait (in order) and come again."""
        group: list[tuple[Claim, asyncio.Future[Decision]]] = []
        try:
            while self._waiting:
                await self._gather(self._waiting)
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                held: list[tuple[Claim, asyncio.Future[Decision]]] = []
                try:
                    results = await self._reserve_group([claim for claim, _ in group])
                except Exception:  # retried one by one just below
                    for claim, decided in group:
                        if await _settle_future(decided, self._reserve_group([claim])):
                            held.append((claim, decided))
                else:
                    for (claim, decided), result in zip(group, results, strict=True):
                        if result is None:
                            held.append((claim, decided))
                        elif not decided.done():
                            decided.set_result(result)
                if held:
                    self._waiting[:0] = held
                    await self._wait_for_pending(
                        tuple({s for c, _ in held for s in scopes_of(c.tenant)})
                    )
        finally:
            # Cancelled (the service stops): nobody may wait forever on an undecided claim.
            for _, decided in [*group, *self._waiting]:
                if not decided.done():
                    decided.cancel()

    async def _gather(self, waiting: Sized) -> None:
        """Let a group fill a little before it is written: jobs arrive a few milliseconds
        apart (each handler reads its record first), and every batch writes the counters."""
        if self._linger > 0 and len(waiting) < self._max_group:
            await asyncio.sleep(self._linger)

    async def _reserve_group(self, claims: list[Claim]) -> list[Decision | None]:
        """Decide `claims` together and write them in one batch; None for a claim that must
        wait (a limit of its scopes is pending)."""
        jobs: dict[Job, First] = {(c.tenant, c.job_id): "open" for c in claims}
        scopes = tuple(dict.fromkeys(s for c in claims for s in scopes_of(c.tenant)))
        # The handler has just found nothing decided for these jobs: write their `open` keys
        # expecting revision 0, and look again only when a batch fails (a redelivery's may
        # have been decided meanwhile).
        found: dict[Job, _Found] = {}
        for attempt in range(MAX_ATTEMPTS):
            state = await self._state(scopes, [open_key(*j) for j in jobs] if attempt else [])
            if attempt:
                found = await self._lookup(jobs, state.entries)
            waiting = {s for s, _, _ in state.catalog.pending(scopes)}
            decided = {j: f.record for j, f in found.items()}
            writes: dict[str, bytes | None] = {}
            expected: dict[str, int] = {}
            touched: set[str] = set()
            results: list[Decision | None] = []
            for claim in claims:
                job = (claim.tenant, claim.job_id)
                existing = decided.get(job)
                if existing is not None:  # a redelivery (or a twin in this group)
                    results.append(Reserved(existing, False))
                    continue
                if waiting.intersection(scopes_of(claim.tenant)):
                    results.append(None)
                    continue
                counted = _counted(state, claim.tenant, claim.at)
                decision = reserve(counted, claim.estimate_micros)
                # Only the first decision of a job finds its `open` key where it was read
                # (revision 0): every later one (a redelivery) fails and reads what it was.
                expected[open_key(*job)] = _revision(found[job].open) if job in found else 0
                if isinstance(decision, Exceeded):
                    # Refused for good: a copy of this admission that comes later (when room
                    # may have opened) finds the refusal instead of reserving. Its `open` key
                    # is deleted (never written before): that decides the job.
                    refused = _refused(claim, decision.detail)
                    decided[job] = refused
                    writes[reservation_key(*job)] = refused.model_dump_json().encode()
                    writes[open_key(*job)] = None
                    results.append(decision)
                    continue
                for c, usage in zip(counted, decision.usages, strict=True):
                    state.counters[c.slot.scope].setdefault(c.slot.period, {})[c.slot.window] = (
                        usage
                    )
                    touched.add(c.slot.scope)
                record = _reservation(claim, slots_for(claim.tenant, claim.at), decision)
                decided[job] = record
                writes[open_key(*job)] = record.model_dump_json().encode()  # until it closes
                results.append(Reserved(record, True))
            if not writes:
                return results
            writes |= state.counter_writes(touched)
            expected |= state.expected(writes)
            if await _write_guarded(self._atomic, writes, expected, state.revision):
                _show(state, touched)
                return results
            await _backoff(attempt)
        raise AtomicConflictError(f"{len(claims)} admissions still contended after {attempt + 1}")

    async def _lookup(
        self, jobs: dict[Job, First], known: dict[str, Entry] | None = None
    ) -> dict[Job, _Found]:
        """Where each job's reservation is: its `first` key read (unless `known` holds it),
        then its other key for the jobs whose first did not tell."""
        entries = dict(known or {})
        first = [open_key(*j) if f == "open" else reservation_key(*j) for j, f in jobs.items()]
        if missing := [k for k in first if k not in entries]:
            entries |= await self._atomic.read(missing)
        found = {j: f for j in jobs if (f := _found(j, entries)) is not None}
        rest = [j for j in jobs if j not in found]
        if rest:
            both = [k for j in rest for k in (open_key(*j), reservation_key(*j))]
            entries |= await self._atomic.read([k for k in both if k not in entries])
            for j in rest:
                found[j] = _found(j, entries) or _Found(
                    None, entries[open_key(*j)], entries[reservation_key(*j)]
                )
        return found

    # -- settlement --------------------------------------------------------------------------

    async def settle(
        self,
        tenant: str,
        job_id: str,
        bill: Bill,
        outcome: str,
        at: datetime,
        *,
        admitted: bool = True,
    ) -> Settled | None:
        """Settle a job's reservation by `bill`: charged or released (its closed reservation
        is its ledger line), or disputed. A job that ended before it was ever admitted gets a
        closed reservation ($0) and its `open` key deleted, so an admission still in flight
        for it can no longer reserve anything; an admitted job without one (admitted before
        budgets existed) is left alone (None)."""
        job = (tenant, job_id)
        res_key, o_key = reservation_key(tenant, job_id), open_key(tenant, job_id)
        closed = _closed(tenant, job_id, at).model_dump_json().encode()
        first: First = "open" if admitted else "res"
        while True:
            settled = await self._close(
                tenant, job_id, "reserved", bill=bill, outcome=outcome, at=at, first=first
            )
            if settled is not None or admitted:
                return settled
            found = (await self._lookup({job: "res"}))[job]
            if found.record is None and await self._atomic.write(
                {res_key: closed, o_key: None},
                {res_key: _revision(found.res), o_key: _revision(found.open)},
            ):
                return Settled(_closed(tenant, job_id, at), True)

    async def resolve(
        self, tenant: str, job_id: str, decision: Charge | Release, at: datetime
    ) -> Settled | None:
        """End a dispute: the admin says what the upstream billed."""
        return await self._close(
            tenant, job_id, "disputed", bill=lambda _: decision, outcome="resolved", at=at,
            first="res",
        )  # fmt: skip

    async def _close(
        self,
        tenant: str,
        job_id: str,
        state: str,
        *,
        bill: Bill,
        outcome: str,
        at: datetime,
        first: First = "open",
    ) -> Settled | None:
        """Move a reservation out of `state` with the counters that hold it. Settlements
        waiting at the same moment are written together, like admissions (group commit)."""
        done: asyncio.Future[Settled | None] = asyncio.get_running_loop().create_future()
        self._endings.append((_Ending(tenant, job_id, state, bill, outcome, at, first), done))
        if self._closer is None or self._closer.done():
            self._closer = asyncio.create_task(self._drain_endings())
        return await asyncio.shield(done)

    async def _drain_endings(self) -> None:
        """Settle waiting endings a group at a time; a group that fails is tried again one
        by one; endings of a scope whose new limit is pending wait and come again."""
        group: list[tuple[_Ending, asyncio.Future[Settled | None]]] = []
        try:
            while self._endings:
                await self._gather(self._endings)
                group = self._endings[: self._max_group]
                del self._endings[: self._max_group]
                held: list[tuple[_Ending, asyncio.Future[Settled | None]]] = []
                try:
                    results = await self._close_group([e for e, _ in group])
                except Exception:  # retried one by one just below
                    results = []
                    for ending, done in group:
                        try:
                            (result,) = await self._close_group([ending])
                        except Exception as exc:  # the handler raises it (redelivered)
                            if not done.done():
                                done.set_exception(exc)
                            result = None
                        results.append(result)
                for (ending, done), result in zip(group, results, strict=True):
                    if isinstance(result, _Held):
                        held.append((ending, done))
                    elif not done.done():
                        done.set_result(result)
                if held:
                    self._endings[:0] = held
                    await self._wait_for_pending(
                        tuple({s for e, _ in held for s in scopes_of(e.tenant)})
                    )
        finally:
            for _, done in [*group, *self._endings]:
                if not done.done():
                    done.cancel()

    async def _close_group(self, endings: list[_Ending]) -> list[Settled | _Held | None]:
        """Settle `endings` in one batch: each reservation's key expected at the revision read
        (so each is settled once), the counters that hold them written once."""
        jobs: dict[Job, First] = {}
        for e in endings:
            jobs.setdefault((e.tenant, e.job_id), e.first)
        first = [open_key(*j) if f == "open" else reservation_key(*j) for j, f in jobs.items()]
        scopes = tuple(dict.fromkeys(s for e in endings for s in scopes_of(e.tenant)))
        for attempt in range(MAX_ATTEMPTS):
            read = await self._state(scopes, first)
            found = await self._lookup(jobs, read.entries)
            current = {j: f.record for j, f in found.items()}
            writes: dict[str, bytes | None] = {}
            expected: dict[str, int] = {}
            touched: set[str] = set()
            results: list[Settled | _Held | None] = []
            for e in endings:
                job = (e.tenant, e.job_id)
                record = current[job]
                if record is None:
                    results.append(None)
                    continue
                if record.state != e.state:
                    results.append(Settled(record, False))
                    continue
                decision = e.bill(record)
                if e.state == "disputed" and isinstance(decision, Dispute):
                    results.append(Settled(record, False))
                    continue
                if read.catalog.pending(scopes_of(e.tenant)):
                    results.append(HELD)
                    continue
                after = record.settled(decision, e.at, e.outcome)
                resolving = e.state == "disputed"
                touched |= _move(read, scopes_of(e.tenant), record, decision, resolving=resolving)
                current[job] = after
                job_writes, job_expected = _ending_writes(e, found[job], after, decision)
                writes |= job_writes
                expected |= job_expected
                results.append(Settled(after, True))
            if not writes:
                return results
            writes |= read.counter_writes(touched)
            if await _write_guarded(
                self._atomic, writes, expected | read.expected(writes), read.revision
            ):
                _show(read, touched)
                return results
            await _backoff(attempt)
        raise AtomicConflictError(f"{len(endings)} settlements still contended after {attempt + 1}")

    # -- the catalog and counters ----------------------------------------------------------

    async def _state(self, scopes: Sequence[str], extra: Sequence[str]) -> _State:
        """The catalog, the counters of `scopes` that have limits and the `extra` keys, read
        together (which counters to read is guessed from the last catalog read; a wrong
        guess costs one more read)."""
        await self._ready()
        guess = self._catalog
        keys = [CATALOG_KEY, *extra, *(counter_key(s) for s in scopes if guess.limited(s))]
        entries = await self._atomic.read(keys)
        found = entries[CATALOG_KEY]
        if found.value is None and not self._converted:
            await self._convert()
            return await self._state(scopes, extra)
        catalog = Catalog.model_validate_json(found.value) if found.value else Catalog()
        self._catalog = catalog
        limited = [s for s in scopes if catalog.limited(s)]
        missing = [counter_key(s) for s in limited if counter_key(s) not in entries]
        if missing:
            entries |= await self._atomic.read(missing)
        counters = {s: _kept(entries[counter_key(s)]) for s in limited}
        return _State(
            catalog=catalog,
            revision=found.revision,
            counters=counters,
            revisions={counter_key(s): entries[counter_key(s)].revision for s in limited},
            entries=entries,
        )

    async def _convert(self) -> None:
        """Before the catalog, each limit had its own key (`limit.<scope>.<period>`) and every
        window its counters (`use.<scope>.<period>.<window>`): the limits move into the
        catalog with their current windows' counters, once, by whichever process is first.
        (Processes of the older version must be stopped first: their writes are not guarded
        by the catalog.)"""
        self._converted = True
        old = [LimitRecord.model_validate_json(v) for _, v in await self._atomic.scan("limit.>")]
        if not old:
            return
        now = datetime.now(UTC)
        catalog = Catalog()
        slots = {r: Slot(r.scope, r.period, window(r.period, now)) for r in old}
        used = await self._atomic.read(
            [usage_key(s) for s in slots.values()]
            + [counter_key(s) for s in {r.scope for r in old}]
        )
        counters: dict[str, Kept] = {}
        for r in old:
            entry = LimitEntry(
                limit_micros=r.limit_micros, soft_micros=r.soft_micros, updated_at=r.updated_at
            )
            catalog = catalog.with_entry(r.scope, r.period, entry)
            slot = slots[r]
            counters.setdefault(r.scope, {})[r.period] = {
                slot.window: _usage(used[usage_key(slot)])
            }
        writes: dict[str, bytes | None] = {CATALOG_KEY: catalog.model_dump_json().encode()}
        for scope, kept in counters.items():
            writes[counter_key(scope)] = Counters(windows=kept).model_dump_json().encode()
        expected = {k: used[k].revision for k in writes if k in used} | {CATALOG_KEY: 0}
        for r in old:
            writes[limit_key(r.scope, r.period)] = None
        await self._atomic.write(writes, expected)  # lost: another process converted them

    async def _ready(self) -> None:
        """Convert the reservations of the older layout, once per bucket (LAYOUT_KEY says it
        was done; each process reads it once). There, a job's reservation lived under its
        `res` key from its admission on, its `open` key held OPEN_MARKER while it was
        reserved, or nothing (before markers existed; and for a job refused, or closed before
        its admission). This layout reads a job's `open` key first and takes revision 0 for
        "nothing decided": so every older job whose `open` key was never written gets one
        (OPEN_MARKER if still reserved: the sweeper lists it; else a delete marker). Older
        reservations are then read where they are (see _found) and their ledger lines too
        (spend()). Processes of the older version must be stopped first."""
        if self._layout_ready:
            return
        async with self._layout_lock:
            if self._layout_ready:
                return
            if (await self._atomic.read([LAYOUT_KEY]))[LAYOUT_KEY].value is None:
                await self._convert_reservations()
                await self._atomic.write({LAYOUT_KEY: b'{"reservations": 2}'}, {})
            self._layout_ready = True

    async def _convert_reservations(self) -> None:
        older = {
            k.removeprefix("res."): _still_reserved(v) for k, v in await self._atomic.scan("res.>")
        }
        names = list(older)
        for n in range(0, len(names), CONVERT_CHUNK):
            chunk = names[n : n + CONVERT_CHUNK]
            opens = await self._atomic.read([f"open.{name}" for name in chunk])
            writes: dict[str, bytes | None] = {
                f"open.{name}": OPEN_MARKER if older[name] else None
                for name in chunk
                if opens[f"open.{name}"].revision == 0
            }
            if writes and not await self._atomic.write(writes, dict.fromkeys(writes, 0)):
                for key, value in writes.items():  # some moved meanwhile: the rest, one by one
                    await self._atomic.write({key: value}, {key: 0})

    async def _wait_for_pending(self, scopes: tuple[str, ...]) -> None:
        """Let a pending limit of `scopes` be initialised; finish it if its setter died."""
        await asyncio.sleep(HOLD_PAUSE)
        now = datetime.now(UTC)
        for scope, period, since in self._catalog.pending(scopes):
            if now - since > PENDING_STALE:
                await self._activate(scope, period)

    async def _activate(self, scope: str, period: Period) -> None:
        """Start the counter of a pending limit from the reservations made so far, and make
        the limit active. Every job of the scope waits while it is pending, so the fold is
        exact however long it takes; the token (when it became pending) keeps a stale
        initialisation from landing on a limit set again since."""
        first = await self._state((scope,), [])
        entry = first.catalog.entry(scope, period)
        if entry is None or entry.pending_since is None:
            return
        token = entry.pending_since
        current = window(period, datetime.now(UTC))
        usage = await self._fold(Slot(scope, period, current))
        for attempt in range(MAX_ATTEMPTS):
            read = first if attempt == 0 else await self._state((scope,), [])
            entry = read.catalog.entry(scope, period)
            if entry is None or entry.pending_since != token:
                return
            read.counters.setdefault(scope, {})[period] = {current: usage}
            active = entry.model_copy(update={"pending_since": None})
            catalog = read.catalog.with_entry(scope, period, active)
            writes = {
                CATALOG_KEY: catalog.model_dump_json().encode(),
                **read.counter_writes([scope]),
            }
            if await self._atomic.write(writes, read.expected(writes)):
                self._catalog = catalog
                return
            await _backoff(attempt)
        raise AtomicConflictError(f"the limit of {scope} {period} still contended")

    async def _fold(self, slot: Slot) -> Usage:
        """A window's usage folded from every reservation made in it (two scans: the open
        ones, then the closed ones, a job closed in between counted once, as closed)."""
        await self._ready()
        tenants = "*" if slot.scope == GLOBAL else slot.scope.removeprefix("tenant:")
        records: dict[str, bytes] = {}
        for kind in ("open", "res"):
            for key, value in await self._atomic.scan(f"{kind}.{tenants}.*"):
                if value != OPEN_MARKER:
                    records[key.split(".", 1)[1]] = value
        usage = Usage()
        for value in records.values():
            r = _parse(value)
            if r.refused is not None or not r.slots or r.estimate_micros <= 0:
                continue  # refused, or closed before any reservation: never counted
            if window(slot.period, r.reserved_at) == slot.window:
                usage = fold(usage, r.estimate_micros, r.state, r.charged_micros)
        return usage

    # -- reading and configuring -------------------------------------------------------------

    async def set_limit(
        self, scope: str, period: Period, limit: Limit | None, at: datetime
    ) -> None:
        """Set, change or remove (None) a limit. A limit on a window that had none starts
        pending: its counter is initialised from the reservations made so far (the spend of
        the month before the limit), then it binds."""
        for attempt in range(MAX_ATTEMPTS):
            read = await self._state((scope,), [])
            current = read.catalog.entry(scope, period)
            if limit is None:
                if current is None:
                    return
                read.counters.get(scope, {}).pop(period, None)
                writes = read.counter_writes([scope] if scope in read.counters else [])
                entry = None
            else:
                since = at if current is None else current.pending_since
                entry = LimitEntry(
                    limit_micros=limit.limit_micros, soft_micros=limit.soft_micros,
                    updated_at=at, pending_since=since,
                )  # fmt: skip
                writes = {}
            catalog = read.catalog.with_entry(scope, period, entry)
            writes[CATALOG_KEY] = catalog.model_dump_json().encode()
            if await self._atomic.write(writes, read.expected(writes)):
                self._catalog = catalog
                break
            await _backoff(attempt)
        else:
            raise AtomicConflictError(f"the limit of {scope} {period} still contended")
        if limit is not None:
            await self._activate(scope, period)

    async def limits(self) -> list[LimitRecord]:
        return (await self._state((), [])).catalog.records()

    async def usage(self, slot: Slot) -> Usage:
        """A window's usage: its counters if it has a limit, else folded from its reservations
        (one scan: the admin API's reads, never an admission's)."""
        read = await self._state((slot.scope,), [])
        kept = read.counters.get(slot.scope, {}).get(slot.period, {})
        if read.catalog.active(slot.scope, slot.period) and slot.window in kept:
            return kept[slot.window]
        return await self._fold(slot)

    async def reservation(self, tenant: str, job_id: str) -> ReservationRecord | None:
        """The job's reservation, wherever it is (one read while it is open, or never was)."""
        await self._ready()
        job = (tenant, job_id)
        return (await self._lookup({job: "open"}))[job].record

    async def spend(self, tenant: str | None = None) -> list[SpendEntry]:
        """The ledger: every closed reservation charged or released by a settlement (and the
        lines an older layout kept under `spend` keys)."""
        await self._ready()
        tenants = tenant or "*"
        older = await self._atomic.scan(f"spend.{tenants}.*")
        entries = [SpendEntry.model_validate_json(v) for _, v in older]
        for _, value in await self._atomic.scan(f"res.{tenants}.*"):
            record = _parse(value)
            if record.outcome is not None and record.state in ("charged", "released"):
                entries.append(_entry(record, record.outcome))
        return sorted(entries, key=lambda e: (e.tenant, e.job_id))

    async def open_jobs(self) -> list[tuple[str, str]]:
        """(tenant, job_id) of every reservation still `reserved`."""
        await self._ready()
        return await self._jobs_marked("open")

    async def disputes(self) -> list[ReservationRecord]:
        jobs = await self._jobs_marked("dispute")
        found = await self._lookup(dict.fromkeys(jobs, "res")) if jobs else {}
        return [
            record
            for job in jobs
            if (record := found[job].record) is not None and record.state == "disputed"
        ]

    async def _jobs_marked(self, marker: str) -> list[tuple[str, str]]:
        """(tenant, job_id) of every `<marker>.<tenant>.<job_id>` key."""
        keys = [key for key, _ in await self._atomic.scan(f"{marker}.>")]
        return [(tenant, job_id) for _, tenant, job_id in (k.split(".", 2) for k in keys)]


async def _settle_future(
    decided: asyncio.Future[Decision], work: Awaitable[list[Decision | None]]
) -> bool:
    """Decide one claim by `work`; True when it must wait (a limit of its scopes is pending)."""
    try:
        (result,) = await work
    except Exception as exc:  # the waiting handler raises it (redelivered)
        if not decided.done():
            decided.set_exception(exc)
        return False
    if result is None:
        return True
    if not decided.done():
        decided.set_result(result)
    return False


async def _write_guarded(
    atomic: AtomicStore,
    writes: dict[str, bytes | None],
    expected: dict[str, int],
    catalog_revision: int,
) -> bool:
    """Write a batch decided under the catalog at `catalog_revision`, guarded by it: it fails
    (and is decided again) if a limit changed meanwhile, without writing the catalog (so
    batches neither serialise on it nor starve a limit's own compare-and-set of it). The guard
    rides on a key written without an expectation (a job's `open` marker, ledger entry or
    dispute marker); a batch of refusals only has none, and writes GUARD_KEY to carry it."""
    if CATALOG_KEY in writes:
        raise ValueError("a batch guarded by the catalog must not write it")
    if all(k in expected for k in writes):
        writes = {**writes, GUARD_KEY: b"{}"}
    return await atomic.write(writes, expected, guards={CATALOG_KEY: catalog_revision})


async def _backoff(attempt: int) -> None:
    """Lost to a concurrent writer: back off a little, with jitter, so that many contenders on
    one hot key do not retry in lockstep."""
    await asyncio.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # noqa: S311


def _counted(state: _State, tenant: str, at: datetime) -> tuple[CountedSlot, ...]:
    """The limited windows a job of `tenant` admitted `at` counts against, with their usage."""
    found = []
    for scope in scopes_of(tenant):
        for period in PERIODS:
            limit = state.catalog.active(scope, period)
            if limit is None:
                continue
            current = window(period, at)
            usage = window_usage(state.counters[scope].get(period, {}), current)
            if usage is not None:
                found.append(CountedSlot(Slot(scope, period, current), usage, limit))
    return tuple(found)


def _ending_writes(
    e: _Ending, found: _Found, after: ReservationRecord, decision: Settlement
) -> tuple[dict[str, bytes | None], dict[str, int]]:
    """What a settlement writes of the job's keys, and what they expect: the closed
    reservation under its `res` key; its `open` key deleted, expected at the revision read
    (that makes it the only settlement); its dispute marker comes (or goes, when resolved)."""
    res_key, o_key = reservation_key(e.tenant, e.job_id), open_key(e.tenant, e.job_id)
    writes: dict[str, bytes | None] = {res_key: after.model_dump_json().encode()}
    expected: dict[str, int] = {}
    if found.under_open:
        # no expectation of its own: the `open` key's decides (and it carries the guard)
        writes[o_key] = None
        expected[o_key] = _revision(found.open)
    else:  # a dispute resolved, or a reservation of the older layout
        expected[res_key] = _revision(found.res)
        if e.state == "reserved":
            writes[o_key] = None
            expected[o_key] = _revision(found.open)
    if isinstance(decision, Dispute):
        writes[dispute_key(e.tenant, e.job_id)] = b"{}"  # listed by disputes() until resolved
    elif e.state == "disputed":
        writes[dispute_key(e.tenant, e.job_id)] = None
    return writes, expected


def _show(state: _State, scopes: Iterable[str]) -> None:
    """The budget gauges of the limited windows just written (their counters as written)."""
    for scope in scopes:
        for period, kept in state.counters.get(scope, {}).items():
            limit = state.catalog.active(scope, period)
            if limit is not None:
                for name, usage in kept.items():
                    show_usage(Slot(scope, period, name), usage, limit)


def _revision(entry: Entry | None) -> int:
    return entry.revision if entry is not None else 0


def _move(
    state: _State,
    scopes: tuple[str, str],
    record: ReservationRecord,
    decision: Settlement,
    *,
    resolving: bool,
) -> set[str]:
    """Move a job's estimate in the counters that hold it (a limited window that keeps the
    job's window: it counted the job at admission, or folded it in when its limit was set);
    returns the scopes whose counters changed."""
    touched = set()
    for scope in scopes:
        for period, kept in state.counters.get(scope, {}).items():
            job_window = window(period, record.reserved_at)
            if job_window not in kept or state.catalog.active(scope, period) is None:
                continue
            usage, estimate = kept[job_window], record.estimate_micros
            if resolving and not isinstance(decision, Dispute):
                kept[job_window] = resolve_usage(usage, estimate, decision)
            else:
                kept[job_window] = settle_usage(usage, estimate, decision)
            touched.add(scope)
    return touched


def _kept(entry: Entry) -> Kept:
    if not entry.value:
        return {}
    return {p: dict(w) for p, w in Counters.model_validate_json(entry.value).windows.items()}


def _usage(entry: Entry) -> Usage:
    return USAGE.validate_json(entry.value) if entry.value else Usage()


def _refused(claim: Claim, detail: str) -> ReservationRecord:
    """The reservation a job refused for its budget never got: closed at $0 with the why."""
    return ReservationRecord(
        tenant=claim.tenant, job_id=claim.job_id, model=claim.model, size=claim.size,
        seconds=claim.seconds, estimate_micros=claim.estimate_micros, slots=[],
        reserved_at=claim.at, state="released", settled_at=claim.at, charged_micros=0,
        refused="budget_exceeded", why=detail,
    )  # fmt: skip


def _closed(tenant: str, job_id: str, at: datetime) -> ReservationRecord:
    """The reservation of a job that ended before reserving anything: closed at $0."""
    return ReservationRecord(
        tenant=tenant, job_id=job_id, model="", size="", seconds=0, estimate_micros=0,
        slots=[], reserved_at=at, state="released", settled_at=at, charged_micros=0,
        why="ended before any reservation",
    )  # fmt: skip


def _reservation(claim: Claim, slots: tuple[Slot, ...], decision: Reserve) -> ReservationRecord:
    return ReservationRecord(
        tenant=claim.tenant,
        job_id=claim.job_id,
        model=claim.model,
        size=claim.size,
        seconds=claim.seconds,
        estimate_micros=claim.estimate_micros,
        slots=list(slots),
        reserved_at=claim.at,
        alerts=list(decision.alerts),
    )


def _entry(record: ReservationRecord, outcome: str) -> SpendEntry:
    charged = record.charged_micros or 0
    per_second = record.estimate_micros // record.seconds
    billed = charged // per_second if charged and per_second else record.seconds
    day = next((s.window for s in record.slots if s.period == "daily"), "")
    return SpendEntry(
        tenant=record.tenant,
        job_id=record.job_id,
        model=record.model,
        size=record.size,
        seconds=billed,
        amount_micros=charged,
        estimate_micros=record.estimate_micros,
        settlement="charged" if record.state == "charged" else "released",
        outcome=outcome,
        why=record.why or "",
        day=day,
        settled_at=record.settled_at or record.reserved_at,
    )


__all__ = ["PERIODS", "Bill", "KvBudgets"]

"""The simulator's durable state: an append-only JSON-lines journal, replayed and compacted at boot.

With CLIPLINE_SIM_STATE_DIR set, every accepted create (with its job), delete, create-like attempt
and character becomes one line, handed to the OS before the response is sent: a SIGKILL loses
nothing a client was told (fsync would only matter for a power cut). At start-up the journal is
replayed (a last line torn by a kill is dropped), the job table is bounded by MAX_JOBS exactly as
it is in memory, and the journal is rewritten from what was loaded, so it never outgrows the live
state. Input-reference images live beside it in frames/, one file per distinct image.

One module though over 300 lines: the line format, its replay and the start-up rewrite change
together, and each is short.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from services.simulator import domain
from services.simulator.clock import Clock
from services.simulator.domain import Timeline
from services.simulator.records import Attempt, Character, CreateRecord, Job

log = logging.getLogger(__name__)

VERSION = 1
JOURNAL, LOCK, FRAMES = "journal.jsonl", "lock", "frames"
TMP_SUFFIX = ".tmp"
# The journal holds prompts and the frames input images: readable by the user alone.
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


class JournalError(Exception):
    """The state directory cannot be used: unwritable, in use, or holding a bad journal."""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as written: wall-clock creation instead of this process's monotonic start (which
    means nothing to the next process), and the first frame by digest (a file in frames/)."""

    id: str
    model: str
    base_model: str
    prompt: str
    size: str
    seconds: str
    created_wall: float
    timeline: Timeline
    remixed_from: str | None = None
    extensions: int = 0
    first_frame: str | None = None  # sha256 hex of the image in frames/


# One line per event; `t` says which. kw_only lets `t` lead each line yet keep its default.
@dataclass(frozen=True, slots=True)
class Header:
    t: Literal["journal"] = field(default="journal", kw_only=True)
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Created:
    """An accepted create and its job; `job` is None once the job is deleted or forgotten."""

    t: Literal["create"] = field(default="create", kw_only=True)
    record: CreateRecord
    job: StoredJob | None


@dataclass(frozen=True, slots=True)
class Deleted:
    t: Literal["delete"] = field(default="delete", kw_only=True)
    id: str


@dataclass(frozen=True, slots=True)
class Attempted:
    t: Literal["attempt"] = field(default="attempt", kw_only=True)
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class CharacterMade:
    t: Literal["character"] = field(default="character", kw_only=True)
    character: Character


LINE: TypeAdapter[Header | Created | Deleted | Attempted | CharacterMade] = TypeAdapter(
    Annotated[Header | Created | Deleted | Attempted | CharacterMade, Field(discriminator="t")]
)
# Writers straight to pydantic-core's serializers: a create is on the simulator's hot path.
_HEADER = TypeAdapter(Header).serializer
_CREATED = TypeAdapter(Created).serializer
_DELETED = TypeAdapter(Deleted).serializer
_ATTEMPTED = TypeAdapter(Attempted).serializer
_CHARACTER = TypeAdapter(CharacterMade).serializer


@dataclass(slots=True)
class Replayed:
    """What a journal holds: the jobs as stored (already bounded), and the accounting whole."""

    jobs: dict[str, StoredJob] = field(default_factory=dict)
    creates: list[CreateRecord] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    characters: dict[str, Character] = field(default_factory=dict)


@dataclass(slots=True)
class State:
    """The simulator's tables as loaded at start-up."""

    jobs: dict[str, Job] = field(default_factory=dict)
    creates: list[CreateRecord] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    characters: dict[str, Character] = field(default_factory=dict)


def replay(lines: Iterable[bytes], max_jobs: int, source: str = "journal") -> Replayed:
    """Apply the journal's lines in order. Jobs beyond `max_jobs` are forgotten oldest first, as
    the live table forgets them. Only an unfinished last line (no newline: a write cut short by
    a kill) is dropped; any other bad line is a JournalError naming `source` and the line."""
    state = Replayed()
    headed = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = LINE.validate_json(line)
        except ValidationError as exc:
            if not line.endswith(b"\n"):
                log.warning("%s: dropped a torn last line (line %d)", source, number)
                break
            raise JournalError(f"{source} line {number}: {_first_error(exc)}") from None
        if not headed and not isinstance(entry, Header):
            raise JournalError(f"{source} line {number}: not a simulator journal (no header)")
        headed = True
        match entry:
            case Header(version=version) if version != VERSION:
                raise JournalError(
                    f"{source} line {number}: journal version {version}, this simulator reads "
                    f"version {VERSION}"
                )
            case Created(record=record, job=job):
                state.creates.append(record)
                if job is not None:
                    state.jobs[job.id] = job
                    if len(state.jobs) > max_jobs:
                        del state.jobs[next(iter(state.jobs))]
            case Deleted(id=video_id):
                state.jobs.pop(video_id, None)  # a job forgotten by the bound may be deleted
            case Attempted(attempt=attempt):
                state.attempts.append(attempt)
            case CharacterMade(character=character):
                state.characters[character.id] = character
    return state


def stored(job: Job, first_frame: str | None) -> StoredJob:
    return StoredJob(
        id=job.id,
        model=job.model,
        base_model=job.base_model,
        prompt=job.prompt,
        size=job.size,
        seconds=job.seconds,
        created_wall=job.created_wall,
        timeline=job.timeline,
        remixed_from=job.remixed_from,
        extensions=job.extensions,
        first_frame=first_frame,
    )


def restore(job: StoredJob, first_frame: bytes | None, *, wall: float, monotonic: float) -> Job:
    """A stored job in this process, whose clocks read `wall` and `monotonic` now: its timeline
    keeps running by wall clock from creation. A wall clock that went backwards counts as no
    time passed, never as negative time."""
    elapsed = max(0.0, wall - job.created_wall)
    return Job(
        id=job.id,
        model=job.model,
        base_model=job.base_model,
        prompt=job.prompt,
        size=job.size,
        seconds=job.seconds,
        created_at=int(job.created_wall),
        created_wall=job.created_wall,
        started=monotonic - elapsed,
        timeline=job.timeline,
        completed_at=domain.completed_at(job.created_wall, job.timeline),
        remixed_from=job.remixed_from,
        extensions=job.extensions,
        first_frame=first_frame,
    )


def digest(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


class Journal:
    """The open journal of one state directory, held under an exclusive lock."""

    def __init__(self, directory: Path, lock_fd: int, frames: set[str]) -> None:
        self.directory = directory
        self.path = directory / JOURNAL
        self._frames_dir = directory / FRAMES
        self._lock_fd = lock_fd
        self._frames = frames  # digests already in frames/
        # Unbuffered: each line is one write(2), in the OS before the response leaves.
        self._file = self.path.open("ab", buffering=0)
        os.fchmod(self._file.fileno(), PRIVATE_FILE)  # prompts: the user's alone

    @classmethod
    def open(cls, directory: Path, *, max_jobs: int, clock: Clock) -> tuple[Journal, State]:
        """Lock the directory, load its state, rewrite the journal from it, open for appends."""
        lock_fd = _lock(directory)
        try:
            state, frames = _load(directory, max_jobs, clock)
            journal = cls(directory, lock_fd, frames)
        except OSError as exc:
            os.close(lock_fd)
            raise JournalError(f"cannot use {directory}: {_reason(exc)}") from None
        except JournalError:
            os.close(lock_fd)
            raise
        return journal, state

    def created(self, record: CreateRecord, job: Job) -> None:
        frame = None
        if job.first_frame is not None:
            frame = digest(job.first_frame)
            if frame not in self._frames:
                _write_atomically(self._frames_dir / frame, [job.first_frame])
                self._frames.add(frame)
        self._append(_CREATED.to_json(Created(record=record, job=stored(job, frame))))

    def deleted(self, video_id: str) -> None:
        self._append(_DELETED.to_json(Deleted(id=video_id)))

    def attempted(self, attempt: Attempt) -> None:
        self._append(_ATTEMPTED.to_json(Attempted(attempt=attempt)))

    def character(self, character: Character) -> None:
        self._append(_CHARACTER.to_json(CharacterMade(character=character)))

    def reset(self) -> None:
        """Forget everything: an empty journal, no frames."""
        os.ftruncate(self._file.fileno(), 0)
        self._append(_HEADER.to_json(Header()))
        _remove_frames(self._frames_dir, keep=set())
        self._frames.clear()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            os.close(self._lock_fd)

    def _append(self, line: bytes) -> None:
        self._file.write(line + b"\n")


def _lock(directory: Path) -> int:
    try:
        for folder in (directory, directory / FRAMES):
            folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            folder.chmod(PRIVATE_DIR)  # one made by an older simulator too
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    except OSError as exc:
        raise JournalError(f"cannot use {directory}: {_reason(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(f"{directory} is in use by another simulator") from None
    return fd


def _load(directory: Path, max_jobs: int, clock: Clock) -> tuple[State, set[str]]:
    path = directory / JOURNAL
    replayed = Replayed()
    if path.exists():
        with path.open("rb") as lines:
            replayed = replay(lines, max_jobs, str(path))
    frames: dict[str, bytes] = {}
    for job in replayed.jobs.values():
        if job.first_frame is not None and job.first_frame not in frames:
            frames[job.first_frame] = _read_frame(directory / FRAMES, job.first_frame)
    wall, monotonic = clock.time(), clock.monotonic()
    state = State(
        jobs={
            job.id: restore(
                job,
                None if job.first_frame is None else frames[job.first_frame],
                wall=wall,
                monotonic=monotonic,
            )
            for job in replayed.jobs.values()
        },
        creates=replayed.creates,
        attempts=replayed.attempts,
        characters=replayed.characters,
    )
    _compact(path, replayed)
    _remove_frames(directory / FRAMES, keep=set(frames))
    return state, set(frames)


def _read_frame(frames_dir: Path, name: str) -> bytes:
    path = frames_dir / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise JournalError(f"{path} is missing (the input image of a journaled job)") from None
    if digest(data) != name:
        raise JournalError(f"{path} does not match its digest (a damaged input image)")
    return data


def _compact(path: Path, replayed: Replayed) -> None:
    """Rewrite the journal as the loaded state: creates in order (each with its job while it
    lives, so a replay rebuilds the same table order), then attempts and characters."""
    lines = itertools.chain(
        [_HEADER.to_json(Header())],
        (
            _CREATED.to_json(Created(record=record, job=replayed.jobs.get(record.video_id)))
            for record in replayed.creates
        ),
        (_ATTEMPTED.to_json(Attempted(attempt=a)) for a in replayed.attempts),
        (_CHARACTER.to_json(CharacterMade(character=c)) for c in replayed.characters.values()),
    )
    _write_atomically(path, (line + b"\n" for line in lines), fsync=True)


def _write_atomically(path: Path, chunks: Iterable[bytes], *, fsync: bool = False) -> None:
    """Whole or absent, never half, even if the process is killed: a temporary file renamed
    over `path`. `fsync` also survives a power cut, which only the start-up rewrite pays for."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # a leftover temporary file keeps its old mode otherwise
    with os.fdopen(fd, "wb") as out:
        out.writelines(chunks)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    tmp.replace(path)


def _remove_frames(frames_dir: Path, keep: set[str]) -> None:
    for path in frames_dir.iterdir():
        if path.name not in keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)

"""The simulator's journal: what is written comes back, a torn last line is dropped, bad files
are clear errors, the start-up rewrite keeps only the live state, and MAX_JOBS bounds it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.simulator import domain
from services.simulator.domain import Timeline
from services.simulator.journal import (
    FRAMES,
    JOURNAL,
    Journal,
    JournalError,
    State,
    StoredJob,
    digest,
    replay,
)
from services.simulator.records import Attempt, Character, CreateRecord, Job
from tests.fakes import START_WALL, FakeClock

QUEUE, GENERATION = 1.0, 4.0
IMAGE = b"\x89PNG not really, but bytes are bytes"


def job(
    n: int,
    clock: FakeClock,
    *,
    first_frame: bytes | None = None,
    error: domain.JobError | None = None,
    remixed_from: str | None = None,
    extensions: int = 0,
) -> Job:
    timeline = Timeline(QUEUE, GENERATION, error)
    return Job(
        id=f"video_{n:048x}",
        model="sora-2",
        base_model="sora-2",
        prompt=f"clip {n}",
        size="1280x720",
        seconds="4",
        created_at=int(clock.time()),
        created_wall=clock.time(),
        started=clock.monotonic(),
        timeline=timeline,
        completed_at=domain.completed_at(clock.time(), timeline),
        remixed_from=remixed_from,
        extensions=extensions,
        first_frame=first_frame,
    )


def record(of: Job, kind: str = "create") -> CreateRecord:
    return CreateRecord(
        video_id=of.id,
        kind=kind,
        client_request_id=f"req-{of.id[-4:]}",
        idempotency_key=None,
        content_type="application/json",
        model=of.model,
        size=of.size,
        seconds=of.seconds,
        created_at=of.created_at,
        source_video_id=None,
        dropped=False,
    )


def attempt(of: Job, status: int = 200) -> Attempt:
    return Attempt("create", status, f"req-{of.id[-4:]}", None, of.created_at)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def opened(state_dir: Path, clock: FakeClock) -> Iterator[Journal]:
    journal, state = Journal.open(state_dir, max_jobs=100, clock=clock)
    assert state == State()
    try:
        yield journal
    finally:
        journal.close()


def reopen(state_dir: Path, clock: FakeClock, max_jobs: int = 100) -> State:
    journal, state = Journal.open(state_dir, max_jobs=max_jobs, clock=clock)
    journal.close()
    return state


def lines(state_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (state_dir / JOURNAL).read_text().splitlines()]


def restarted(clock: FakeClock, after: float) -> FakeClock:
    """The clock of a new process `after` seconds later: wall time moved on, and the monotonic
    clock started again from somewhere else entirely."""
    later = FakeClock()
    later.wall = clock.wall + after
    later.mono = 17.0
    return later


# --- write and replay ---------------------------------------------------------------------------


def test_what_is_written_comes_back(opened: Journal, state_dir: Path, clock: FakeClock) -> None:
    first, second = job(1, clock), job(2, clock, first_frame=IMAGE, remixed_from="video_x")
    failed = job(3, clock, error=domain.MODERATED, extensions=2)
    character = Character("char_1", "Ada", int(clock.time()))
    for made in (first, second, failed):
        opened.created(record(made), made)
        opened.attempted(attempt(made))
    opened.attempted(attempt(first, status=429))
    opened.character(character)
    opened.deleted(first.id)
    opened.close()

    state = reopen(state_dir, clock)

    assert state.jobs == {second.id: second, failed.id: failed}
    assert list(state.jobs) == [second.id, failed.id]
    assert state.jobs[second.id].first_frame == IMAGE
    assert state.jobs[failed.id].timeline.error == domain.MODERATED
    assert state.creates == [record(first), record(second), record(failed)]
    assert state.attempts == [attempt(first), attempt(second), attempt(failed), attempt(first, 429)]
    assert state.characters == {"char_1": character}


def test_the_timeline_continues_by_wall_clock(
    opened: Journal, state_dir: Path, clock: FakeClock
) -> None:
    made = job(1, clock)
    opened.created(record(made), made)
    opened.close()
    later = restarted(clock, after=3.0)

    restored = reopen(state_dir, later).jobs[made.id]

    assert restored.started == pytest.approx(later.mono - 3.0)
    assert restored.created_at == made.created_at
    assert restored.completed_at == made.completed_at
    phase = domain.phase_at(later.monotonic() - restored.started, restored.timeline)
    assert phase == domain.Phase("in_progress", 1 + int(99 * 2.0 / GENERATION))


def test_a_wall_clock_that_went_back_counts_as_no_time(
    opened: Journal, state_dir: Path, clock: FakeClock
) -> None:
    made = job(1, clock)
    opened.created(record(made), made)
    opened.close()
    earlier = restarted(clock, after=-60.0)

    restored = reopen(state_dir, earlier).jobs[made.id]

    assert restored.started == earlier.mono
    assert restored.completed_at == made.completed_at


def test_replay_is_a_plain_function_of_the_lines() -> None:
    header = b'{"t":"journal","version":1}\n'
    stored = StoredJob(
        "video_a", "sora-2", "sora-2", "p", "720x1280", "4", START_WALL, Timeline(0, 1)
    )
    created = json.dumps(
        {
            "t": "create",
            "record": {
                "video_id": "video_a",
                "kind": "create",
                "client_request_id": None,
                "idempotency_key": None,
                "content_type": "application/json",
                "model": "sora-2",
                "size": "720x1280",
                "seconds": "4",
                "created_at": int(START_WALL),
                "source_video_id": None,
                "dropped": False,
            },
            "job": {
                "id": "video_a",
                "model": "sora-2",
                "base_model": "sora-2",
                "prompt": "p",
                "size": "720x1280",
                "seconds": "4",
                "created_wall": START_WALL,
                "timeline": {"queue_seconds": 0, "generation_seconds": 1, "error": None},
            },
        }
    ).encode()
    replayed = replay([header, created + b"\n", b"\n"], max_jobs=10)
    assert replayed.jobs == {"video_a": stored}
    assert [r.video_id for r in replayed.creates] == ["video_a"]
    assert replay([], max_jobs=10).jobs == {}


# --- torn and bad files -------------------------------------------------------------------------


def test_a_torn_last_line_is_dropped_and_the_rest_kept(
    opened: Journal, state_dir: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    kept, torn = job(1, clock), job(2, clock)
    opened.created(record(kept), kept)
    opened.created(record(torn), torn)
    opened.close()
    path = state_dir / JOURNAL
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.rindex(b"\n", 0, -1) + 40])  # a kill mid-write

    with caplog.at_level(logging.WARNING):
        state = reopen(state_dir, clock)

    assert list(state.jobs) == [kept.id]
    assert [r.video_id for r in state.creates] == [kept.id]
    assert "torn last line (line 3)" in caplog.text
    assert path.read_bytes().endswith(b"\n")  # rewritten whole: the next append starts clean
    assert list(reopen(state_dir, clock).jobs) == [kept.id]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"t":"journal","version":1}\nnot json\n{"t":"delete","id":"x"}\n',
            "line 2: Invalid JSON",
        ),
        (b'{"t":"journal","version":1}\n{"t":"bogus"}\n', "line 2: Input tag 'bogus'"),
        (b'{"t":"journal","version":1}\n{"t":"delete"}\n', "line 2: delete.id: Field required"),
        (b'{"t":"delete","id":"x"}\n', "line 1: not a simulator journal (no header)"),
        (b'{"t":"journal","version":2}\n', "line 1: journal version 2, this simulator reads"),
        (b"\x00\xff\xfe garbage\n", "line 1: Invalid JSON"),
    ],
)
def test_a_bad_journal_is_a_one_line_error(
    state_dir: Path, clock: FakeClock, content: bytes, message: str
) -> None:
    state_dir.mkdir()
    (state_dir / JOURNAL).write_bytes(content)
    with pytest.raises(JournalError) as caught:
        Journal.open(state_dir, max_jobs=10, clock=clock)
    text = str(caught.value)
    assert text.startswith(f"{state_dir / JOURNAL} ")
    assert message in text
    assert "\n" not in text
    assert (state_dir / JOURNAL).read_bytes() == content  # left as it was, for a human to read
    (state_dir / JOURNAL).write_bytes(b"")
    assert reopen(state_dir, clock) == State()  # the failed open let go of its lock


def test_a_missing_or_damaged_frame_is_an_error(
    opened: Journal, state_dir: Path, clock: FakeClock
) -> None:
    made = job(1, clock, first_frame=IMAGE)
    opened.created(record(made), made)
    opened.close()
    (frame,) = (state_dir / FRAMES).iterdir()
    frame.write_bytes(b"other bytes")
    with pytest.raises(JournalError, match="does not match its digest"):
        reopen(state_dir, clock)
    frame.unlink()
    with pytest.raises(JournalError, match="is missing"):
        reopen(state_dir, clock)


def test_an_empty_journal_is_an_empty_state(state_dir: Path, clock: FakeClock) -> None:
    state_dir.mkdir()
    (state_dir / JOURNAL).write_bytes(b"")
    assert reopen(state_dir, clock) == State()


def test_an_unusable_state_dir_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(JournalError, match=r"cannot use .*/file/state: Not a directory"):
        Journal.open(not_a_dir / "state", max_jobs=10, clock=clock)


def test_one_state_dir_serves_one_simulator(opened: Journal, state_dir: Path) -> None:
    with pytest.raises(JournalError, match="in use by another simulator"):
        Journal.open(state_dir, max_jobs=10, clock=FakeClock())
    opened.close()
    reopen(state_dir, FakeClock())  # the lock goes with the journal


# --- compaction and the bound -------------------------------------------------------------------


def test_start_up_rewrites_the_journal_as_the_loaded_state(
    opened: Journal, state_dir: Path, clock: FakeClock
) -> None:
    jobs = [job(n, clock, first_frame=bytes([n]) * 8) for n in range(6)]
    for made in jobs:
        opened.created(record(made), made)
        opened.attempted(attempt(made))
    for gone in jobs[:4]:
        opened.deleted(gone.id)
    opened.reset()  # everything before this is forgotten ...
    for made in jobs:  # ... and the same jobs made again
        opened.created(record(made), made)
        opened.attempted(attempt(made))
    for gone in jobs[:4]:
        opened.deleted(gone.id)
    opened.close()
    before = (state_dir / JOURNAL).stat().st_size

    state = reopen(state_dir, clock)

    written = lines(state_dir)
    assert (state_dir / JOURNAL).stat().st_size < before
    assert [line["t"] for line in written] == ["journal"] + ["create"] * 6 + ["attempt"] * 6
    assert [line["job"] is not None for line in written[1:7]] == [False] * 4 + [True] * 2
    assert sorted(p.name for p in (state_dir / FRAMES).iterdir()) == sorted(
        digest(j.first_frame) for j in jobs[4:] if j.first_frame is not None
    )
    assert reopen(state_dir, clock) == state
    assert list(state.jobs) == [j.id for j in jobs[4:]]
    assert len(state.creates) == len(state.attempts) == 6


def test_max_jobs_bounds_the_replayed_table_oldest_first(
    opened: Journal, state_dir: Path, clock: FakeClock
) -> None:
    jobs = [job(n, clock, first_frame=bytes([n]) * 8) for n in range(5)]
    for made in jobs:
        opened.created(record(made), made)
    opened.deleted(jobs[1].id)  # already forgotten under the smaller bound below: no matter
    opened.close()

    state = reopen(state_dir, clock, max_jobs=3)

    assert list(state.jobs) == [j.id for j in jobs[2:]]  # as the live table would hold them
    assert [r.video_id for r in state.creates] == [j.id for j in jobs]  # accounting stays whole
    with_job = [line["job"] is not None for line in lines(state_dir)[1:]]
    assert with_job == [False, False, True, True, True]
    assert len(list((state_dir / FRAMES).iterdir())) == 3
    assert list(reopen(state_dir, clock, max_jobs=1).jobs) == [jobs[4].id]
    assert len(list((state_dir / FRAMES).iterdir())) == 1


def test_reset_leaves_an_empty_journal(opened: Journal, state_dir: Path, clock: FakeClock) -> None:
    made = job(1, clock, first_frame=IMAGE)
    opened.created(record(made), made)
    opened.reset()
    assert lines(state_dir) == [{"t": "journal", "version": 1}]
    assert list((state_dir / FRAMES).iterdir()) == []
    again = job(2, clock, first_frame=IMAGE)  # the same image after a reset is written again
    opened.created(record(again), again)
    opened.close()
    assert reopen(state_dir, clock).jobs[again.id].first_frame == IMAGE

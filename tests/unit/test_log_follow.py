"""`clipline logs`: the last lines of a file, and following it across rotation and truncation."""

from __future__ import annotations

from pathlib import Path

from clipline.logs import Follower, last_lines


def write(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert last_lines(log, 5) == []
    write(log, "".join(f"line {i}\n" for i in range(10)))
    assert last_lines(log, 3) == ["line 7", "line 8", "line 9"]
    assert last_lines(log, 50) == [f"line {i}" for i in range(10)]
    assert last_lines(log, 0) == []


def test_follow_starts_at_the_end_and_keeps_partial_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    write(log, "old\n")
    follower = Follower(log)
    assert follower.read_new() == []
    write(log, "new 1\nnew")
    assert follower.read_new() == ["new 1"]
    write(log, " 2\n")
    assert follower.read_new() == ["new 2"]
    follower.close()


def test_follow_goes_on_across_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    write(log, "before\n")
    follower = Follower(log)
    write(log, "last of the old file\nunfinished")
    log.rename(tmp_path / "x.log.1")  # what RotatingFileHandler and nats-server do
    assert follower.read_new() == ["last of the old file"]  # the new file does not exist yet
    write(log, "first of the new file\n")
    assert follower.read_new() == ["unfinished", "first of the new file"]
    write(log, "more\n")
    assert follower.read_new() == ["more"]
    follower.close()


def test_follow_a_symlink_that_moves_and_a_truncated_file(tmp_path: Path) -> None:
    # SeaweedFS's glog points weed.INFO at the current file.
    first, second, link = tmp_path / "a", tmp_path / "b", tmp_path / "weed.INFO"
    write(first, "a0\n")
    link.symlink_to(first.name)
    follower = Follower(link)
    write(first, "a1\n")
    write(second, "b0\n")
    link.unlink()
    link.symlink_to(second.name)
    assert follower.read_new() == ["a1", "b0"]
    second.write_text("c\n")  # truncated in place (seen as such while it is shorter, as by tail)
    assert follower.read_new() == ["c"]
    follower.close()


def test_follow_a_file_that_appears_later(tmp_path: Path) -> None:
    log = tmp_path / "late.log"
    follower = Follower(log)
    assert follower.read_new() == []
    write(log, "hello\n")
    assert follower.read_new() == ["hello"]
    follower.close()

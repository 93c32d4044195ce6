"""Reading a stack process's log files: the last lines, and following them across rotation."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import BinaryIO


def last_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of `path` (none when it does not exist)."""
    if count <= 0:
        return []
    try:
        with path.open("rb") as f:
            kept = deque(f, maxlen=count)
    except FileNotFoundError:
        return []
    return [line.decode(errors="replace").rstrip("\r\n") for line in kept]


class Follower:
    """What is appended to `path` from now on, like `tail -F`: when the file is replaced (a log
    rotation renames it and starts a new one) or truncated, the rest of the old file is read,
    then the new one from its start. A file that does not exist yet is read once it appears."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._partial = b""
        self._open(at_end=True)

    def _open(self, *, at_end: bool) -> None:
        try:
            self._file = self.path.open("rb")
        except FileNotFoundError:
            self._file = None
            return
        if at_end:
            self._file.seek(0, os.SEEK_END)

    def read_new(self) -> list[str]:
        """Complete lines written since the last call."""
        if self._file is None:
            self._open(at_end=False)
            if self._file is None:
                return []
        data = self._file.read()
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return self._lines(data)  # between a rotation's rename and the new file
        mine = os.fstat(self._file.fileno())
        if (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
            data += self._file.read()  # written to the old file just before it was renamed
            if (self._partial + data)[-1:] not in (b"", b"\n"):
                data += b"\n"  # an unfinished last line of the old file still counts
            self._file.close()
            self._open(at_end=False)
            if self._file is not None:
                data += self._file.read()
        elif mine.st_size < self._file.tell():
            self._file.seek(0)  # truncated in place
            data += self._file.read()
        return self._lines(data)

    def _lines(self, data: bytes) -> list[str]:
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [line.decode(errors="replace").rstrip("\r") for line in lines]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

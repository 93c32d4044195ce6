"""Folders and files only their owner may read: the stack's data, keys and prompts."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE, FILE_MODE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it its owner's alone (0700), whatever
    mode an older clipline or another tool left it with."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path.chmod(DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` in a file created 0600 and renamed into place (never half
    written, never readable by others even for a moment); a missing folder is made 0700."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    draft.unlink(missing_ok=True)
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    draft.replace(path)

"""The embedded stack's admin token: one per stack folder, kept in a file only its user reads.

It lives apart from stack.json, which `clipline down` removes, so a stack started again has
the same token; and it is never part of a process's recorded environment (stack.json), only
of the environment a service process is given.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

ENV = "CLIPLINE_ADMIN_TOKEN"
FILE = "admin-token"


def path(home: Path, file: str = FILE) -> Path:
    return home / file


def read(home: Path, file: str = FILE) -> str | None:
    """The kept token (or another secret kept so, in `file`), or None when this stack folder
    has none yet. A file others may read (one written by hand) is made the user's alone first."""
    try:
        if path(home, file).stat().st_mode & 0o077:
            path(home, file).chmod(0o600)
        token = path(home, file).read_text().rstrip("\n")
    except FileNotFoundError:
        return None
    return token or None


def write(home: Path, token: str, file: str = FILE) -> None:
    """Keep `token`, in a file created 0600 and renamed into place (never half written)."""
    home.mkdir(parents=True, exist_ok=True)
    draft = home / f".{file}.{os.getpid()}"
    draft.unlink(missing_ok=True)
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    draft.replace(path(home, file))


def for_fresh_start(home: Path, environ: Mapping[str, str]) -> str:
    """The token a stack starting afresh gives its services: the user's exported
    CLIPLINE_ADMIN_TOKEN, else the one kept from an earlier start, else a new one. Kept."""
    token = environ.get(ENV) or read(home) or secrets.token_urlsafe(32)
    if token != read(home):
        write(home, token)
    return token


def kept(home: Path) -> str:
    """The token of a running stack: the kept one (a new one, kept, for a stack started by a
    clipline that had none). A restart or a new replica gets this one, whatever the shell
    that asks has exported, as it gets the rest of the recorded environment."""
    token = read(home)
    if token is None:
        token = secrets.token_urlsafe(32)
        write(home, token)
    return token

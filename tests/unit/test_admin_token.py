"""The embedded stack's admin token: chosen once, kept 0600, given to a process unrecorded."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from clipline import admin_token
from clipline.servers import spawn
from clipline.stack import ProcInfo


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_start_makes_one_and_keeps_it(tmp_path: Path) -> None:
    token = admin_token.for_fresh_start(tmp_path, {})
    assert len(token) >= 43  # token_urlsafe(32)
    assert admin_token.read(tmp_path) == token
    assert mode(admin_token.path(tmp_path)) == 0o600
    assert admin_token.for_fresh_start(tmp_path, {}) == token  # the next start reuses it
    assert admin_token.kept(tmp_path) == token
    assert [p.name for p in tmp_path.iterdir()] == [admin_token.FILE]  # no draft left behind


def test_the_users_exported_token_wins_and_is_kept(tmp_path: Path) -> None:
    admin_token.for_fresh_start(tmp_path, {})
    mine = {admin_token.ENV: "users-own-token"}
    assert admin_token.for_fresh_start(tmp_path, mine) == "users-own-token"
    assert admin_token.read(tmp_path) == "users-own-token"
    assert mode(admin_token.path(tmp_path)) == 0o600
    # A restart from a shell without it (or with another) gets the stack's.
    assert admin_token.kept(tmp_path) == "users-own-token"


def test_a_stack_without_one_gets_one_when_a_service_starts(tmp_path: Path) -> None:
    assert admin_token.read(tmp_path) is None
    token = admin_token.kept(tmp_path)
    assert admin_token.read(tmp_path) == token


def test_a_hand_written_file_is_made_private(tmp_path: Path) -> None:
    path = admin_token.path(tmp_path)
    path.write_text("by-hand\n")
    path.chmod(0o644)
    assert admin_token.read(tmp_path) == "by-hand"
    assert mode(path) == 0o600


def test_a_secret_env_reaches_the_process_but_not_its_record(tmp_path: Path) -> None:
    code = "import os; print(os.environ['PUBLIC'], os.environ['CLIPLINE_ADMIN_TOKEN'])"
    proc = spawn(
        "probe", [sys.executable, "-c", code], tmp_path / "probe.out", {"PUBLIC": "shown"},
        secret_env={"CLIPLINE_ADMIN_TOKEN": "s3cret-token"},
    )  # fmt: skip
    assert proc.popen.wait(timeout=30) == 0
    assert (tmp_path / "probe.out").read_text().split() == ["shown", "s3cret-token"]
    assert proc.env == {"PUBLIC": "shown"}
    info = ProcInfo(name="probe", pid=proc.pid, port=None, log="", env={"K": "s3cret"})
    assert "s3cret" not in repr(info)  # a recorded env holds the local S3 key

"""The embedded servers cap their own logs: nats-server rotates its log file by size."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipline.servers import start_nats, stop_pid

pytestmark = pytest.mark.integration
LINE_SLACK = 512  # nats-server rotates after the write that crosses the limit


def test_nats_log_is_rotated_at_the_cap(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    # Its start-up banner alone (about 2 KB) crosses a 1 KiB cap.
    server = start_nats(tmp_path / "data", logs, log_max_bytes=1024, log_backups=1)
    stop_pid(server.proc.pid)  # stopping logs a few more lines
    current = logs / "nats.log"
    rotated = [p for p in logs.iterdir() if p.name.startswith("nats.log.")]
    assert current.stat().st_size <= 1024 + LINE_SLACK
    assert len(rotated) == 1, rotated  # one older file kept, the rest deleted
    assert all(p.stat().st_size <= 1024 + LINE_SLACK for p in rotated)
    assert (logs / "nats.stderr").read_text() == ""  # everything went to the log file

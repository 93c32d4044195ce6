"""Operating a test stack from outside: the `clipline` command, PIDs, kill -9, health."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from clipline import local_keys
from clipline.servers import pid_alive
from clipline.stack import StackOptions, StackState, admin_endpoint, down, health_check, up

NO_RATE_LIMITS = {
    "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",  # the simulator limits nothing...
    "CLIPLINE_RATE_RPM": "100000",  # ...so the submitters have no steady limit to shape to
    "CLIPLINE_RATE_CONCURRENCY": "1000",
}
"""Stack settings for tests that push many jobs through fast (injected 429s still count)."""


@contextmanager
def running_stack(home: Path, options: StackOptions) -> Iterator[StackState]:
    """A stack for a module; every process it has at the end (restarted ones too) is stopped."""
    try:
        yield up(home, options)
    finally:
        survivors = down(home)
        assert not survivors, survivors


def clipline(
    home: str | Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The `clipline` command as a user runs it (a separate process)."""
    return subprocess.run(
        [sys.executable, "-m", "clipline.cli", "--home", str(home), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def as_tenant(state: StackState | str | Path, tenant: str) -> dict[str, str]:
    """The Authorization header of `tenant`'s key on the stack (kept, as `clipline --tenant`
    keeps it: made through the admin API on first use)."""
    home = Path(state.home if isinstance(state, StackState) else state)
    key = local_keys.ensure(home, tenant, *admin_endpoint(home))
    return {"Authorization": f"Bearer {key}"}


def current(home: str | Path) -> StackState:
    state = StackState.load(Path(home))
    assert state is not None, f"no stack.json under {home}"
    return state


def pids(home: str | Path) -> dict[str, int]:
    return {p.name: p.pid for p in current(home).processes}


def ports(home: str | Path) -> dict[str, int | None]:
    return {p.name: p.port for p in current(home).processes}


def kill_hard(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL `pid` and wait until it is gone (reaped, when it is a child of this process)."""
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive_or_reap(pid), f"pid {pid} to die", timeout)


def _alive_or_reap(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return pid_alive(pid)


def all_healthy(home: str | Path) -> bool:
    state = current(home)
    return all(state.running(p) and health_check(p)() for p in state.processes)


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll `condition` until it holds, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.1)

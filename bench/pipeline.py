"""The whole pipeline under a benchmark: a fresh embedded stack, job requests over NATS, and the
jobs' events timestamped as they arrive.

Shared by P4 (bench/follow_up.py) and P5 (bench/inflight.py). The stack is the one `clipline up`
starts (clipline/stack.py), in a temporary folder, stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from clipline.replicas import SERVICES
from clipline.stack import StackOptions, StackState, down, up

# As tests/e2e/harness.py NO_RATE_LIMITS: the simulator limits nothing, so the submitters have no
# steady limit to shape to; what is measured is following jobs, not the rate limit (P3).
NO_RATE_LIMITS = {
    "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",
    "CLIPLINE_RATE_RPM": "100000",
    "CLIPLINE_RATE_CONCURRENCY": "1000",
}
# Tiny assets (storage's downloads are not what is measured) and no openai-poll-after-ms hint:
# whether the real API sends one is unconfirmed, and with one the poller would follow the hint,
# not its own schedule.
FOLLOW_ENV = {
    **NO_RATE_LIMITS,
    "CLIPLINE_SIM_SMALL_ASSETS": "true",
    "CLIPLINE_SIM_POLL_AFTER_MS": "off",
}
TERMINAL = frozenset({"failed", "rejected", "timed_out", "completed"})
PUBLISH_BATCH = 500


def env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


@contextmanager
def stack(prefix: str, options: StackOptions) -> Iterator[StackState]:
    """A fresh stack in a temporary folder; every process it started is stopped (by PID) and
    the folder removed (BENCH_KEEP=1 keeps it, with the logs)."""
    home = Path(tempfile.mkdtemp(prefix=f"clipline-bench-{prefix}-"))
    try:
        yield up(home, options)
    finally:
        survivors = down(home)
        if survivors:
            print(f"  WARNING: still running after down: {[(p.name, p.pid) for p in survivors]}")
        if os.environ.get("BENCH_KEEP"):
            print(f"  stack folder kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def service_pids(state: StackState) -> dict[str, int]:
    """The five services' processes (first replicas), by name, from the stack's record."""
    return {p.name: p.pid for p in state.processes if p.name in SERVICES}


def request(key: str) -> bytes:
    body = {
        "model": "sora-2", "size": "1280x720", "seconds": "4", "idempotency_key": key,
        "prompt": f"a paper boat on a rainy street, take {key}",
    }  # fmt: skip
    return json.dumps(body).encode()


async def submit(js: JetStreamContext, tenant: str, keys: list[str]) -> None:
    """Job requests as another system sends them (README, "Submitting from another system"),
    `PUBLISH_BATCH` publishes in flight at a time."""
    for start in range(0, len(keys), PUBLISH_BATCH):
        await asyncio.gather(*(
            js.publish(f"clipline.job.requested.v1.{tenant}", request(key),
                       headers={"Nats-Msg-Id": f"{tenant}:{key}"})
            for key in keys[start : start + PUBLISH_BATCH]
        ))  # fmt: skip


def new_tenant(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Events:
    """Every event of one tenant's jobs: counts per kind, and when each job's `generated`
    arrived here (wall clock, the clock the simulator's /control/videos uses), by upstream id."""

    kinds: Counter[str] = field(default_factory=Counter)
    generated_at: dict[str, float] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)  # job id -> terminal kind (+ reason)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_event(self, msg: Msg) -> None:
        arrived = time.time()
        parts = msg.subject.split(".")
        kind, job_id = parts[2], parts[-1]
        self.kinds[kind] += 1
        if kind == "generated":
            self.generated_at.setdefault(json.loads(msg.data)["upstream_id"], arrived)
        elif kind in TERMINAL and kind != "completed":
            self.ended.setdefault(job_id, f"{kind} {json.loads(msg.data).get('reason', '')}")
        self.changed.set()

    async def watch(self, nc: Client, tenant: str) -> None:
        await nc.subscribe(f"clipline.job.*.v1.{tenant}.*", cb=self.on_event)

    async def until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait (woken by each event) until `done()` holds; False at `deadline` (monotonic)."""
        return await until(self.changed, done, deadline)


async def until(changed: asyncio.Event, done: Callable[[], bool], deadline: float) -> bool:
    """Wait, woken by `changed`, until `done()` holds; False at `deadline` (monotonic)."""
    while not done():
        changed.clear()
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(changed.wait(), min(left, 5.0))
        except TimeoutError:
            continue
    return True


async def control(state: StackState, what: str) -> Any:
    """A simulator control listing (`videos`, `creates`, ...)."""
    async with httpx.AsyncClient(base_url=state.simulator_url, timeout=60) as http:
        answer = await http.get(f"/control/{what}")
        answer.raise_for_status()
        return answer.json()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def registry_for(folder: Path, generation_seconds: float) -> Path:
    """A copy of the built-in registry whose simulator provider expects `generation_seconds`
    per job (its `default_generation`), as a deployment states its provider's speed; written
    into `folder`. The poller's first look at a job is then near its real completion from the
    first job on, instead of after it has learned it from finished ones."""
    text = (Path(__file__).parent.parent / "shared" / "registry" / "providers.toml").read_text()
    marker = "default_generation = { base_seconds = 6.5, per_video_second = 0 }"
    if marker not in text:
        raise RuntimeError("the simulator's default_generation line moved: update registry_for")
    path = folder / "providers.toml"
    path.write_text(
        text.replace(
            marker,
            f"default_generation = {{ base_seconds = "
            f"{generation_seconds:g}, per_video_second = 0 }}",
        )
    )
    return path

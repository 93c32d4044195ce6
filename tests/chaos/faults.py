"""The chaos suite's faults, each an asyncio task that runs while a scenario's jobs do.

Random moments come from the run's seeded `random.Random` (printed, so a run can be repeated);
every fault that takes something down brings it back before its task ends, whether the jobs
ended first or not. Waits for outcomes poll with deadlines; the only timed waits are the
faults' own schedule (when to strike, how long an outage lasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clipline.replicas import parse_replica
from clipline.stack import StackState, restart
from tests.e2e.harness import current, kill_hard

GENERATION = {"distribution": "uniform", "seconds": 2.0, "spread": 1.0}
"""Every job generates for 1 to 3 s upstream (the simulator's Generation, seeded per create)."""
UPSTREAM = {
    "operations": ["create", "retrieve", "list"],
    "error_rate": 0.2,
    "error_statuses": [500, 502, 503],
    "rate_limit_rate": 0.02,
    "rate_limit_retry_after_ms": 500,
    "drop_after_create_rate": 0.3,
}
"""Upstream faults: 20% 5xx, some 429s and 30% of creates answered by a dropped connection."""
STORM = {**UPSTREAM, "rate_limit_rate": 0.9}
"""A 429 storm: most requests refused for a while."""


def calm(seed: int) -> dict[str, Any]:
    """The simulator behaving, with the suite's generation times."""
    return {"seed": seed, "generation": GENERATION}


@dataclass
class Log:
    """What the faults did, as lines for the report (seconds since the scenario began)."""

    began: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        self.lines.append(f"+{time.monotonic() - self.began:.0f}s {what}")


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """The faults' schedule: wait `seconds`, cut short by `stop`; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


async def until(condition: Callable[[], bool], stop: asyncio.Event, within: float) -> bool:
    """Poll `condition` until it holds (True), or `stop` is set or `within` s pass (False)."""
    deadline = time.monotonic() + within
    while not condition():
        if await pause(stop, 0.05) or time.monotonic() > deadline:
            return False
    return True


async def set_faults(state: StackState, faults: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=state.simulator_url, timeout=30) as http:
        answer = await http.put("/control/faults", json=faults)
        answer.raise_for_status()


async def kill_and_restart(home: Path, name: str, down_for: float, log: Log) -> None:
    """kill -9 of the process `name`, then `clipline restart` of it after `down_for` s."""
    state = current(home)
    proc = state.find(name)
    if state.running(proc):  # another fault may have it down already
        with contextlib.suppress(ProcessLookupError):
            await asyncio.to_thread(kill_hard, proc.pid, 30.0)
        log.add(f"kill -9 {name} (pid {proc.pid})")
    await asyncio.sleep(down_for)  # the fault's length: scheduling, not synchronisation
    began = time.monotonic()
    await asyncio.to_thread(restart, home, name, 120.0)
    log.add(f"{name} restarted ({time.monotonic() - began:.1f}s)")


def service_processes(home: Path) -> list[str]:
    """The names of every service replica of the stack (not nats, S3 or the simulator)."""
    return [p.name for p in current(home).processes if parse_replica(p.name) is not None]


def nats_nodes(home: Path) -> list[str]:
    """The nats-server processes of a cluster (`nats-1`...); none in single-server mode."""
    return [p.name for p in current(home).processes if p.name.startswith("nats-")]


def moments(rng: random.Random, n: int, window: float) -> list[float]:
    """`n` random moments in the first `window` seconds, in order."""
    return sorted(rng.uniform(0.0, window) for _ in range(n))


async def at_moments(
    rng: random.Random,
    stop: asyncio.Event,
    n: int,
    window: float,
    strike: Callable[[], Awaitable[None]],
) -> None:
    """`strike` at `n` random moments of the window, each on its own (they may overlap)."""

    async def at(moment: float) -> None:
        if not await pause(stop, moment):
            await strike()

    await asyncio.gather(*(at(m) for m in moments(rng, n, window)))


async def kill_services(
    home: Path, rng: random.Random, stop: asyncio.Event, kills: int, window: float, log: Log
) -> None:
    """At `kills` random moments of the window: kill -9 a random service replica, restart it
    0 to 2 s later."""

    async def strike() -> None:
        name = rng.choice(service_processes(home))
        await kill_and_restart(home, name, rng.uniform(0.0, 2.0), log)

    await at_moments(rng, stop, kills, window, strike)


async def kill_nats_node(
    home: Path, rng: random.Random, stop: asyncio.Event, kills: int, window: float, log: Log
) -> None:
    """In cluster mode, at `kills` random moments of the window: kill -9 a random nats-server
    node, restart it 3 to 8 s later. One node at a time (a moment that comes while one is down
    waits for its restart): the cluster keeps its quorum, as R3 promises."""
    nodes = nats_nodes(home)
    if not nodes:
        log.add("nats-node: single server, skipped")
        return
    began = time.monotonic()
    for moment in moments(rng, kills, window):
        if await pause(stop, moment - (time.monotonic() - began)):
            return
        await kill_and_restart(home, rng.choice(nodes), rng.uniform(3.0, 8.0), log)


async def s3_outage(
    home: Path, outage: float, started: Callable[[], bool], stop: asyncio.Event, log: Log
) -> None:
    """Once the first job is generated (it is to be stored), kill -9 S3 for `outage` s, then
    restart it. Runs to the end (S3 comes back) even if `stop` is set meanwhile."""
    if not await until(started, stop, 120.0):
        return
    await kill_and_restart(home, "seaweedfs", outage, log)


async def upstream_faults(
    state: StackState, seed: int, rng: random.Random, stop: asyncio.Event, log: Log
) -> None:
    """5xx, 429s and dropped creates from the start; a 429 storm of 1 to 3 s every 3 to 8 s;
    calm again (the suite's generation times only) when `stop` is set."""
    base = {**calm(seed), **UPSTREAM}
    storms = 0
    try:
        await set_faults(state, base)
        log.add("upstream: 5xx 20%, dropped creates 30%")
        while not await pause(stop, rng.uniform(3.0, 8.0)):
            storms += 1
            await set_faults(state, {**calm(seed), **STORM})
            await pause(stop, rng.uniform(1.0, 3.0))
            await set_faults(state, base)
    finally:
        await set_faults(state, calm(seed))
        log.add(f"upstream calm again after {storms} 429 storms")


async def kill_pricing_guard(
    home: Path, decided: Callable[[], int], batch: int, stop: asyncio.Event, log: Log
) -> None:
    """Kill -9 the second pricing_guard replica once a fifth of the batch is decided (admitted
    or rejected): mid-batch. Restarted 2 s later."""
    if not await until(lambda: decided() >= max(1, batch // 5), stop, 120.0):
        return
    log.add(f"{decided()} of {batch} decided")
    await kill_and_restart(home, "pricing_guard-2", 2.0, log)

"""Budgets on the embedded stack, as a user drives them: two pricing_guard replicas
(`clipline scale pricing_guard 2`), 500 concurrent requests racing for a budget that fits N jobs,
once as is and once with a replica killed by SIGKILL mid-race. Exactly N are admitted."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from clipline.stack import StackOptions, StackState
from shared.contracts.ids import job_id_for
from shared.contracts.requests import request_subject
from tests.e2e.harness import clipline, kill_hard, pids, running_stack, wait_for

pytestmark = pytest.mark.e2e
REQUESTS = 500
FITS = 20
COST = 400_000  # sora-2, 4 s, $0.10 a second
DECIDED_WITHIN = 240.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    home = tmp_path_factory.mktemp("budgets")
    with running_stack(home, StackOptions(generation_seconds=1.0, poll_after_ms=200)) as state:
        scaled = clipline(home, "scale", "pricing_guard", "2")
        assert scaled.returncode == 0, scaled.stderr
        assert "pricing_guard-2" in pids(home)
        yield state


def budget_of(state: StackState, scope: str) -> dict[str, Any]:
    shown = clipline(state.home, "budget", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    found = [b for b in json.loads(shown.stdout)["budgets"] if b["scope"] == scope]
    assert len(found) == 1, shown.stdout
    (budget,) = found
    return dict(budget)


async def race(
    state: StackState, tenant: str, kill_midway: bool
) -> dict[str, list[dict[str, Any]]]:
    """Publish REQUESTS requests of `tenant` at once; return every admission and rejection."""
    decided: dict[str, list[dict[str, Any]]] = {"admitted": [], "rejected": []}
    seen: set[str] = set()
    all_in = asyncio.Event()
    midway = asyncio.Event()

    async def on_decision(msg: Msg) -> None:
        kind, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
        if job_id in seen:
            return  # a redelivered admission announced again (same fact id; core sees both)
        seen.add(job_id)
        decided[kind].append(json.loads(msg.data))
        if len(seen) >= REQUESTS // 5:
            midway.set()
        if len(seen) >= REQUESTS:
            all_in.set()

    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    js = nc.jetstream()
    try:
        for kind in decided:
            await nc.subscribe(f"clipline.job.{kind}.v1.{tenant}.*", cb=on_decision)
        await nc.flush()

        async def publish(i: int) -> None:
            body = {"model": "sora-2", "size": "1280x720", "seconds": 4,
                    "prompt": f"race {i}", "idempotency_key": f"k{i}"}  # fmt: skip
            await js.publish(request_subject(tenant), json.dumps(body).encode(),
                             headers={"Nats-Msg-Id": f"{tenant}:k{i}"})  # fmt: skip

        started = time.monotonic()
        await asyncio.gather(*(publish(i) for i in range(REQUESTS)))
        if kill_midway:
            await asyncio.wait_for(midway.wait(), DECIDED_WITHIN)
            kill_hard(pids(state.home)["pricing_guard-2"])  # SIGKILL mid-race
            print(f"killed pricing_guard-2 after {len(seen)} decisions")
        await asyncio.wait_for(all_in.wait(), DECIDED_WITHIN)
        print(f"{REQUESTS} decisions in {time.monotonic() - started:.1f} s")
    finally:
        await nc.close()
    return decided


@pytest.mark.parametrize("kill_midway", [False, True], ids=["two-replicas", "one-killed"])
async def test_racing_requests_admit_exactly_what_the_budget_fits(
    stack: StackState, kill_midway: bool
) -> None:
    tenant = f"race{uuid.uuid4().hex[:6]}"
    scope = f"tenant:{tenant}"
    limit = f"{FITS * COST / 1_000_000:.2f}"
    set_ = clipline(stack.home, "budget", "set", "--scope", scope, "--period", "lifetime",
                    "--limit", limit)  # fmt: skip
    assert set_.returncode == 0, set_.stderr

    decided = await race(stack, tenant, kill_midway)

    admitted, rejected = decided["admitted"], decided["rejected"]
    overshoot = len(admitted) - FITS
    print(f"admitted {len(admitted)} of {REQUESTS} for a budget of {FITS} jobs: "
          f"overshoot {overshoot}")  # fmt: skip
    assert overshoot == 0
    assert len(rejected) == REQUESTS - FITS
    assert {r["reason"] for r in rejected} == {"budget_exceeded"}
    assert all(scope in r["detail"] and "lifetime" in r["detail"] for r in rejected)
    ids = {job_id_for(tenant, f"k{i}") for i in range(REQUESTS)}
    assert {e["job_id"] for e in admitted + rejected} == ids  # every request decided, once
    budget = budget_of(stack, scope)
    # Nothing counted twice, nothing leaked: the window holds exactly the admitted estimates.
    assert budget["admitted"]["micros"] == FITS * COST
    assert budget["used"]["micros"] == FITS * COST
    assert budget["jobs"] == FITS
    assert budget["balanced"]
    if kill_midway:
        restarted = clipline(stack.home, "restart", "pricing_guard-2")
        assert restarted.returncode == 0, restarted.stderr


async def test_admitted_jobs_settle_and_land_in_the_spend_ledger(stack: StackState) -> None:
    """After a race, the admitted jobs complete and are charged what they produced."""
    tenant = f"race{uuid.uuid4().hex[:6]}"
    scope = f"tenant:{tenant}"
    assert clipline(stack.home, "budget", "set", "--scope", scope, "--period", "daily",
                    "--limit", "0.80").returncode == 0  # fmt: skip
    nc = await nats.connect(stack.nats_url, user_credentials=stack.nats_creds)
    try:
        js = nc.jetstream()
        for i in range(3):
            body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": f"s{i}",
                    "idempotency_key": f"s{i}"}  # fmt: skip
            await js.publish(request_subject(tenant), json.dumps(body).encode())
    finally:
        await nc.close()

    def ledger() -> dict[str, Any]:
        spent = clipline(stack.home, "spend", "--tenant", tenant, "--json")
        assert spent.returncode == 0, spent.stderr
        return dict(json.loads(spent.stdout))

    wait_for(lambda: ledger()["jobs"] == 2, "two jobs in the spend ledger", 60)
    spent = ledger()
    assert spent["total"]["micros"] == 2 * COST
    assert spent["rows"][0]["charged_jobs"] == 2
    budget = budget_of(stack, scope)
    assert (budget["settled"]["micros"], budget["reserved"]["micros"]) == (2 * COST, 0)
    assert budget["left"]["micros"] == 0

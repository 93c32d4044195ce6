"""End to end: the provider a deployment names decides; a retired one costs no upstream call."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from clipline.stack import StackOptions, StackState
from shared.contracts.ids import job_id_for
from tests.e2e.harness import as_tenant, running_stack

pytestmark = pytest.mark.e2e
DEADLINE = 60.0
TERMINAL = ("completed", "failed", "rejected")


@pytest.fixture(scope="module")
def openai_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    """The services told to use the `openai` provider; the upstream is still the simulator."""
    options = StackOptions(env={"CLIPLINE_PROVIDER": "openai"})
    with running_stack(Path(tmp_path_factory.mktemp("openai")), options) as state:
        yield state


async def test_a_job_for_a_retired_provider_is_rejected_without_any_upstream_call(
    openai_stack: StackState,
) -> None:
    state = openai_stack
    tenant, key = f"ret{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    job_id = job_id_for(tenant, key)
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a paper boat"}
    headers = {**as_tenant(state, tenant), "Idempotency-Key": key}
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        seen: list[str] = []
        ended: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_event(msg: Any) -> None:
            kind = msg.subject.split(".")[2]
            seen.append(kind)
            if kind in TERMINAL:
                ended.put_nowait(json.loads(msg.data))

        await nc.subscribe(f"clipline.job.*.v1.{tenant}.{job_id}", cb=on_event)
        await nc.flush()
        with httpx.Client(base_url=state.intake_url, timeout=10) as http:
            taken = await asyncio.to_thread(http.post, "/v1/jobs", json=body, headers=headers)
            assert taken.status_code == 202, taken.text  # a valid request: openai's own model
            event = await asyncio.wait_for(ended.get(), DEADLINE)
            record = http.get(f"/v1/jobs/{job_id}", headers=as_tenant(state, tenant)).json()
    finally:
        await nc.close()

    assert seen == ["accepted", "rejected"]
    assert (event["reason"], event["stage"]) == ("model_retired", "pricing_guard")
    assert event["detail"] == (
        "sora-2 was retired by openai on 2026-09-24; no replacement was named"
    )
    assert (record["status"], record["reason"], record["cost_micros"]) == (
        "rejected",
        "model_retired",
        None,
    )
    # The simulator records every create it made and every create-like request that reached it.
    with httpx.Client(base_url=state.simulator_url, timeout=10) as sim:
        assert sim.get("/control/creates").json() == []
        assert sim.get("/control/attempts").json() == []

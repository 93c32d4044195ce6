"""What one job costs on the wire: every message of clipline's account counted by kind, per job.

A fresh embedded stack (no rate limits, small assets, 0.1 s generations), a `>` subscription
with the admin identity, `jobs` requests published at once; when every job has completed (and
the subscription has seen the last settlement's messages go quiet), the messages seen are
classified (KV reads and writes per bucket, inbox replies, JetStream API calls by kind,
advisories, pulls, acks, events) and divided by the number of jobs; nats-server's own
`/varz` in_msgs/out_msgs and each process's CPU over the same time are printed beside them
(the CPU includes idle polling while the wire goes quiet, and is noisy on a shared machine).

    PYTHONPATH=$PWD .venv/bin/python -m bench.wire_counts [jobs]

Run it on other code by pointing PYTHONPATH at that code (the stack's services inherit it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx
import nats
from nats.aio.msg import Msg

from bench.harness import cpu_seconds
from bench.pipeline import NO_RATE_LIMITS, TERMINAL, new_tenant, service_pids, stack, submit
from clipline.stack import StackOptions, StackState

DONE_WITHIN = 300.0
QUIET_SECONDS = 3.0
"""After the last completion, the wire is read until no KV write or event has been seen for this
long (the settlements are done); idle pulls meanwhile are counted too (a few per job)."""


def kind(subject: str) -> str:
    """The class of a message by its subject."""
    parts = subject.split(".")
    if subject.startswith("$JS.API.DIRECT.GET."):
        return f"kv get (direct) {parts[4].removeprefix('KV_')}"
    if subject.startswith("$JS.API.STREAM.MSG.GET."):
        return f"kv get (api) {parts[5].removeprefix('KV_')}"
    if subject.startswith("$KV."):
        return f"kv write {parts[1]}"
    if subject.startswith("_INBOX"):
        return "inbox reply"
    if subject.startswith("$JS.EVENT.ADVISORY.API"):
        return "advisory api"
    if subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
        return "pull"
    if subject.startswith("$JS.ACK."):
        return "ack"
    if subject.startswith("$JS.API."):
        return "api " + ".".join(parts[2:4])
    if subject.startswith("$JS.EVENT."):
        return "event " + ".".join(parts[2:5])
    if subject.startswith("clipline.job."):
        return f"clipline event {parts[2]}"
    return "other " + ".".join(parts[:2])


async def varz(url: str) -> tuple[int, int]:
    async with httpx.AsyncClient(timeout=10) as http:
        data = (await http.get(url)).json()
    return int(data["in_msgs"]), int(data["out_msgs"])


async def count(state: StackState, jobs: int) -> None:
    nats_proc = state.processes[0]  # started first
    assert "nats" in nats_proc.name, nats_proc.name
    varz_url = nats_proc.health.split("/healthz")[0] + "/varz"
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    seen: Counter[str] = Counter()
    work = asyncio.Event()
    done: set[str] = set()
    others: dict[str, str] = {}
    all_done = asyncio.Event()
    tenant = new_tenant("wire")

    async def on(msg: Msg) -> None:
        what = kind(msg.subject)
        seen[what] += 1
        if what.startswith(("kv write", "clipline event")):
            work.set()  # work, not idle pulls
        if msg.subject.startswith("clipline.job.") and msg.subject.split(".")[4] == tenant:
            what, job_id = msg.subject.split(".")[2], msg.subject.split(".")[-1]
            if what == "completed":
                done.add(job_id)
            elif what in TERMINAL:
                others[job_id] = what + " " + json.loads(msg.data).get("reason", "")
            if len(done) + len(others) >= jobs:
                all_done.set()

    await nc.subscribe(">", cb=on)
    await nc.flush()
    in_before, out_before = await varz(varz_url)
    pids = {**service_pids(state), "nats-server": nats_proc.pid}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    publisher = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    await submit(publisher.jetstream(), tenant, [f"w-{i}" for i in range(jobs)])
    await asyncio.wait_for(all_done.wait(), DONE_WITHIN)
    while True:  # until the wire goes quiet: the settlements are done
        work.clear()
        try:
            await asyncio.wait_for(work.wait(), QUIET_SECONDS)
        except TimeoutError:
            break
    in_after, out_after = await varz(varz_url)
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / jobs for name, pid in pids.items()}
    wall = time.monotonic() - started
    await publisher.close()
    await nc.close()
    print(f"{len(done)}/{jobs} completed in {wall:.1f} s; others: {dict(list(others.items())[:3])}")
    # The subscription's own deliveries are out_msgs; the publisher's requests are in_msgs.
    received, sent = (in_after - in_before) / jobs, (out_after - out_before) / jobs
    print(f"/varz per job: in {received:.1f}  out {sent:.1f}")
    services = sum(ms for name, ms in cpu.items() if name != "nats-server")
    shown = "  ".join(f"{name} {ms:.1f}" for name, ms in cpu.items())
    print(f"CPU ms per job: {shown}  (the five services: {services:.1f})")
    total = sum(seen.values())
    print(f"seen on `>` per job: {total / jobs:.1f}")
    for name, n in sorted(seen.items(), key=lambda kv: -kv[1]):
        print(f"  {n / jobs:7.2f}  {name}")


def main(jobs: int) -> None:
    env = {**NO_RATE_LIMITS, "CLIPLINE_SIM_SMALL_ASSETS": "true"}
    options = StackOptions(generation_seconds=0.1, queue_seconds=0.0, poll_after_ms=100, env=env)
    with stack("wire", options) as state:
        asyncio.run(count(state, jobs))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)

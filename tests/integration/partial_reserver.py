"""A pricing_guard stand-in that dies half-way through an atomic reservation: it sends the
first messages of the batch (the job's reservation and some window counters), says so, and
hangs before the commit until a test kills it with SIGKILL.

Run: python -m tests.integration.partial_reserver NATS_URL CREDS BUCKET TENANT JOB_ID ESTIMATE
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import nats

from services.pricing_guard.adapters import KvBudgets
from services.pricing_guard.ports import Claim
from shared.kvatomic import AtomicKv


async def main(url: str, creds: str, bucket: str, tenant: str, job_id: str, estimate: str) -> None:
    nc = await nats.connect(url, user_credentials=creds)
    kv = await nc.jetstream().key_value(bucket)
    hang = asyncio.Event()

    async def get_kv():  # type: ignore[no-untyped-def]
        return kv

    async def between(sent: int) -> None:
        if sent >= 2:  # the reservation and a counter are out, the rest is not
            await nc.flush()
            print(f"partial {sent}", flush=True)
            await hang.wait()  # never set: killed here

    budgets = KvBudgets(AtomicKv(get_kv, lambda: nc, bucket, between_writes=between))
    claim = Claim(tenant, job_id, "sora-2", "1280x720", 4, int(estimate), datetime.now(UTC))
    await budgets.reserve(claim)
    print("committed", flush=True)  # never reached


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))

"""A replica that takes one event and hangs in its handler, to be killed with SIGKILL by a test.

Run: python -m tests.integration.stuck_replica NATS_URL SUBJECT DURABLE
"""

from __future__ import annotations

import asyncio
import sys

from opentelemetry.sdk.trace import TracerProvider

from shared.contracts import JobAdmittedV1
from shared.runtime import make_runtime


async def main(nats_url: str, subject: str, durable: str) -> None:
    rt = make_runtime("testsvc", nats_url, TracerProvider())
    router = rt.router()
    hang = asyncio.Event()

    @router.on_subject(subject, durable, ack_wait=2.0)
    async def handler(event: JobAdmittedV1) -> None:
        print(f"got {event.event_id}", flush=True)
        await hang.wait()  # never set: the process is killed mid-handler

    rt.broker.include_router(router)
    await rt.broker.start()
    print("ready", flush=True)
    await hang.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

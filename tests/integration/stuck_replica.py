"""A replica that takes one event and hangs in its handler, to be killed with SIGKILL by a test.

Run: python -m tests.integration.stuck_replica NATS_URL SUBJECT DURABLE CREDS
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from shared.contracts import JobAdmittedV1
from shared.messaging import ServiceRouter
from shared.runtime import make_platform, wire


async def main(nats_url: str, subject: str, durable: str, creds: str) -> None:
    platform = make_platform("testsvc", nats_url, TracerProvider(), Path(creds))
    router = ServiceRouter("testsvc")
    hang = asyncio.Event()

    @router.on_subject(subject, durable, ack_wait=2.0)
    async def handler(event: JobAdmittedV1) -> None:
        print(f"got {event.event_id}", flush=True)
        await hang.wait()  # never set: the process is killed mid-handler

    wire(platform.broker, router, None, platform.jobs)
    await platform.broker.start()
    print("ready", flush=True)
    await hang.wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))

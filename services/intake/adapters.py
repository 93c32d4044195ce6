"""Intake's adapters: image facts with Pillow, and a job's events read from the jobs stream."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from services.intake.domain import ImageFacts
from services.intake.ports import StoredEvent
from shared.contracts.events import Event
from shared.streams import JOBS_STREAM_NAME


def probe_image(data: bytes) -> ImageFacts | None:
    """Format and dimensions of an image, or None when the bytes are not a readable image."""
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            img.verify()  # checks the file's structure without decoding every pixel
            return ImageFacts(format=str(img.format), width=img.width, height=img.height)
    except (
        UnidentifiedImageError,
        PILImage.DecompressionBombError,
        OSError,
        ValueError,
        SyntaxError,
    ):
        return None


class NatsJobEvents:
    """JobEvents on the jobs stream, read message by message (`STREAM.MSG.GET` with
    `next_by_subj`), woken by a core subscription to the job's subjects.

    Not an ordered consumer: the permission to create ephemeral consumers on CLIPLINE_JOBS
    would also let intake rename-update any durable consumer of that stream (the server applies
    a create naming an existing consumer as an update), so intake may only read messages."""

    def __init__(self, connection: Callable[[], Client], stream: str = JOBS_STREAM_NAME) -> None:
        self._connection = connection
        self._stream = stream

    async def follow(
        self, tenant: str, job_id: str, after: int, idle_seconds: float
    ) -> AsyncIterator[StoredEvent | None]:
        nc = self._connection()
        js = nc.jetstream()
        subjects = Event.subject_filter_any(tenant, job_id)
        woken = asyncio.Event()

        async def wake(_: Msg) -> None:
            woken.set()

        # Subscribed before the first read: an event stored after that read still wakes us.
        sub = await nc.subscribe(subjects, cb=wake)
        try:
            seq = after
            while True:
                woken.clear()
                while True:
                    try:
                        msg = await js.get_msg(self._stream, seq + 1, subjects, next=True)
                    except NotFoundError:
                        break  # caught up
                    if msg.seq is None or msg.subject is None:
                        break
                    seq = msg.seq
                    yield StoredEvent(seq, msg.subject, (msg.data or b"").decode())
                try:
                    await asyncio.wait_for(woken.wait(), timeout=idle_seconds)
                except TimeoutError:
                    yield None  # idle; a lost wake-up is also caught here, by the next read
        finally:
            await sub.unsubscribe()

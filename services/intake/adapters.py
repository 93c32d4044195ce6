"""Intake's adapters: image facts read with Pillow, storage's assets request over NATS, and
a job's events read from the jobs stream."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from opentelemetry import propagate
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from services.intake.domain import ImageFacts
from services.intake.ports import StoredEvent
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1, assets_subject
from shared.contracts.events import Event
from shared.streams import JOBS_STREAM_NAME

log = logging.getLogger("clipline.intake.assets")


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


class NatsAssets:
    """Asks storage over core NATS (`clipline.storage.assets.v1.<tenant>`, a queue group):
    no storage replica answering, a timeout or a broken reply is `unavailable`."""

    def __init__(self, connection: Callable[[], Any], timeout: float = 10.0) -> None:
        self._connection = connection  # the broker's, once it is connected
        self._timeout = timeout

    async def ask(self, tenant: str, request: AssetsRequestV1) -> AssetsReplyV1:
        payload = request.model_dump_json().encode()
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # storage's work joins the caller's trace
        try:
            msg = await self._connection().request(
                assets_subject(tenant), payload, timeout=self._timeout, headers=carrier or None
            )
            return AssetsReplyV1.model_validate_json(msg.data)
        except (NatsError, TimeoutError, OSError, ValueError) as exc:
            log.warning("intake: storage did not answer an assets request: %s", type(exc).__name__)
            return AssetsReplyV1(
                job_id=request.job_id, error="unavailable", detail="storage did not answer"
            )


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
                    data = (msg.data or b"").decode()
                    yield StoredEvent(seq, msg.subject, data, msg.headers, msg.time)
                try:
                    await asyncio.wait_for(woken.wait(), timeout=idle_seconds)
                except TimeoutError:
                    yield None  # idle; a lost wake-up is also caught here, by the next read
        finally:
            await sub.unsubscribe()

"""Intake's adapters: image facts read with Pillow, and storage's assets request over NATS."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from nats.errors import Error as NatsError
from opentelemetry import propagate
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from services.intake.domain import ImageFacts
from shared.contracts.assets import AssetsReplyV1, AssetsRequestV1, assets_subject

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

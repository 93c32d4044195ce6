"""Reading image facts with Pillow: the intake's only non-network adapter."""

from __future__ import annotations

import io

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from services.intake.domain import ImageFacts


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

"""Check a stored video: fetch it from S3 and decode it with PyAV."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
from minio import Minio

if TYPE_CHECKING:
    from clipline.stack import StackState


class VerificationError(RuntimeError):
    """The stored video does not decode to what was asked for."""


@dataclass(frozen=True)
class VideoFacts:
    codec: str
    width: int
    height: int
    seconds: float
    frames: int

    def __str__(self) -> str:
        return f"{self.codec} {self.width}x{self.height}, {self.seconds:.2f}s, {self.frames} frames"


def probe(path: Path) -> VideoFacts:
    """Decode every frame: a file that only has a valid header does not pass."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        seconds = frames / rate if rate else 0.0
        return VideoFacts(stream.codec_context.name, stream.width, stream.height, seconds, frames)


def verify_video(state: StackState, bucket: str, key: str, size: str, seconds: int) -> VideoFacts:
    client = Minio(
        state.s3_endpoint,
        access_key=state.s3_access_key,
        secret_key=state.s3_secret_key,
        secure=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        client.fget_object(bucket, key, str(path))
        facts = probe(path)
    width, height = (int(v) for v in size.split("x"))
    if (facts.width, facts.height) != (width, height):
        raise VerificationError(f"{facts}: expected {size}")
    if abs(facts.seconds - seconds) > 0.25:
        raise VerificationError(f"{facts}: expected {seconds}s")
    return facts

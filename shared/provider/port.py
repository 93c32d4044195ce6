"""The provider port: what clipline needs from any video generation upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from shared.provider.wire import UpstreamVideo, Variant


@dataclass(frozen=True, slots=True)
class InputImage:
    """The first frame, sent as the multipart file part `input_reference`."""

    data: bytes
    content_type: str
    filename: str


@dataclass(frozen=True, slots=True)
class CreateVideo:
    """One create call. `client_request_id` identifies the job upstream (X-Client-Request-Id and
    Idempotency-Key), so an upstream that honours either never creates it twice.

    A remix, edit or extension (`kind`) is made from the upstream video `source_video_id`:
    the upstream takes model and size from it, so only the prompt (and an extension's added
    `seconds`) are sent."""

    model: str
    size: str
    seconds: int
    prompt: str
    client_request_id: str
    input_reference: InputImage | None = None
    kind: str = "generate"
    source_video_id: str | None = None


@dataclass(frozen=True, slots=True)
class Download:
    """A streamed variant: its content type, declared length (if any) and byte chunks."""

    content_type: str
    content_length: int | None
    chunks: AsyncIterator[bytes]


class VideoProvider(Protocol):
    async def create(self, request: CreateVideo) -> UpstreamVideo: ...

    async def retrieve(self, video_id: str) -> tuple[UpstreamVideo, float | None]:
        """The video and the server's suggested poll delay in seconds (openai-poll-after-ms)."""
        ...

    def download(
        self, video_id: str, variant: Variant
    ) -> AbstractAsyncContextManager[Download]: ...

    async def delete(self, video_id: str) -> None: ...

    async def recent(self, limit: int = 100, since: int | None = None) -> list[UpstreamVideo]:
        """The newest videos of this API key, newest first (for reconciling creates): one page
        of `limit`, or with `since` (epoch seconds) page after page until one reaches back
        before it, the upstream has no more, or a bounded number of pages was read."""
        ...

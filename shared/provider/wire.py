"""Wire models of the OpenAI Videos API, tolerant of missing optional keys and unknown ones."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Variant = Literal["video", "thumbnail", "spritesheet"]
VARIANTS: tuple[Variant, ...] = ("video", "thumbnail", "spritesheet")


class UpstreamError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str
    message: str


class UpstreamVideoPage(BaseModel):
    """One page of `GET /videos` (newest first with order=desc)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    data: list[UpstreamVideo] = []
    has_more: bool = False


class UpstreamVideo(BaseModel):
    """The `Video` object, read tolerantly: guide examples omit keys, so only `id` and `status`
    are required, and `status` is any string (gateways report e.g. `expired`): what an
    unknown status means is the poller's decision, not a parse error."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    object: str = "video"
    model: str | None = None
    status: str
    progress: int = 0
    created_at: int | None = None
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str | None = None
    size: str | None = None
    seconds: str | None = None
    remixed_from_video_id: str | None = None
    error: UpstreamError | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed")


UpstreamVideoPage.model_rebuild()

"""Wire models of the OpenAI Videos API, tolerant of missing optional keys and unknown ones."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

VideoStatus = Literal["queued", "in_progress", "completed", "failed"]
Variant = Literal["video", "thumbnail", "spritesheet"]
VARIANTS: tuple[Variant, ...] = ("video", "thumbnail", "spritesheet")


class UpstreamError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: str
    message: str


class UpstreamVideo(BaseModel):
    """The `Video` object. Guide examples omit nullable keys, so they default to None."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    object: Literal["video"] = "video"
    model: str
    status: VideoStatus
    progress: int = 0
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str | None = None
    size: str
    seconds: str
    remixed_from_video_id: str | None = None
    error: UpstreamError | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed")

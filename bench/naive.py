"""The script a user would write instead of clipline: asyncio, the official `openai` SDK and the
`minio` SDK, one task per video (bench/e2e.py's baseline).

Each task calls `videos.create_and_poll` (the SDK's own helper: it creates the video, then
retrieves it until it is done, sleeping as the `openai-poll-after-ms` header says, else its own
1000 ms), downloads the video (`videos.download_content`) and uploads it with minio's
`put_object` in a worker thread (minio's client blocks), as its README shows. No retries of its
own (the SDK retries twice), no rate limiting, no persistence: what is left out is what clipline
is for, and what this measures it against.
"""

from __future__ import annotations

import asyncio
import io
import time
import warnings
from dataclasses import dataclass, field

from minio import Minio
from openai import AsyncOpenAI

from clipline.stack import LOCAL_API_KEY, StackState

PROMPT = "a paper boat on a rainy street, take {key}"
# The Sora API's methods warn that it shuts down in 2026-09 (the SDK's own deprecation notice).
SORA_DEPRECATED = "The Sora API is scheduled to permanently shut down"


@dataclass
class Finished:
    """When each job (by key) ended here, and the ones that did not complete, with why."""

    completed_at: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class Script:
    """The user's script, against one stack's simulator and S3."""

    def __init__(self, state: StackState) -> None:
        warnings.filterwarnings("ignore", message=SORA_DEPRECATED, category=DeprecationWarning)
        self.openai = AsyncOpenAI(api_key=LOCAL_API_KEY, base_url=f"{state.simulator_url}/v1")
        self.s3 = Minio(
            state.s3_endpoint,
            access_key=state.s3_access_key,
            secret_key=state.s3_secret_key,
            secure=False,
        )
        self.bucket = state.bucket
        self.finished = Finished()

    async def one(self, key: str) -> None:
        """One video: create and poll, download, upload. Its end is recorded under `key`."""
        try:
            video = await self.openai.videos.create_and_poll(
                model="sora-2", size="1280x720", seconds="4", prompt=PROMPT.format(key=key)
            )
            if video.status != "completed":
                self.finished.failed[key] = f"{video.status}: {video.error}"
                return
            content = await self.openai.videos.download_content(video.id)
            data = content.content
            await asyncio.to_thread(
                self.s3.put_object,
                self.bucket,
                f"naive/{video.id}.mp4",
                io.BytesIO(data),
                len(data),
                content_type="video/mp4",
            )
        except Exception as exc:
            self.finished.failed[key] = f"{type(exc).__name__}: {exc}"
            return
        self.finished.completed_at[key] = time.monotonic()

    async def close(self) -> None:
        await self.openai.close()

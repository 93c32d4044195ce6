"""`GET /v1/videos/{id}/content` over real sockets: the object is passed on as S3 sends it (the
first bytes reach the caller while S3 still holds back the rest: never buffered whole), and the
caller's Range goes to S3 with its 206 and Content-Range coming back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from aiohttp import web

from clipline.servers import LOOPBACK, free_port
from services.intake.facade_map import video_id
from tests.component.facade_support import serving as facade_serving
from tests.component.harness import new_job_id
from tests.fakes import bearer

pytestmark = pytest.mark.integration
DEADLINE = 10.0
FIRST, REST = b"A" * 100_000, b"B" * 100_000


@dataclass
class FakeS3:
    """Serves one object: its first part at once, the rest only once `release` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    ranges: list[str | None] = field(default_factory=list)

    async def get(self, request: web.Request) -> web.StreamResponse:
        asked = request.headers.get("Range")
        self.ranges.append(asked)
        if asked == "bytes=10-19":
            data = (FIRST + REST)[10:20]
            headers = {"Content-Range": f"bytes 10-19/{len(FIRST + REST)}"}
            return web.Response(body=data, status=206, headers=headers, content_type="video/mp4")
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(FIRST) + len(REST)
        await response.prepare(request)
        await response.write(FIRST)
        await asyncio.wait_for(self.release.wait(), DEADLINE)
        await response.write(REST)
        await response.write_eof()
        return response


@asynccontextmanager
async def fake_s3() -> AsyncIterator[tuple[FakeS3, str]]:
    s3 = FakeS3()
    app = web.Application()
    app.router.add_get("/{tail:.*}", s3.get)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        yield s3, f"http://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


async def test_content_streams_as_s3_sends_and_forwards_a_range() -> None:
    async with fake_s3() as (s3, base), facade_serving() as served:
        job_id = new_job_id()
        served.completed(job_id)

        async def presign(key: str, *, internal: bool = False) -> str:
            assert internal  # intake downloads on the services' endpoint
            return f"{base}/clipline-assets/{key}?X-Amz-Signature=x%2By"

        served.store.presign = presign  # type: ignore[method-assign]
        port = free_port()
        config = uvicorn.Config(served.app, host=LOOPBACK, port=port, log_level="warning")
        server = uvicorn.Server(config)
        running = asyncio.create_task(server.serve())
        try:
            for _ in range(500):  # until uvicorn listens (bounded)
                if server.started:
                    break
                await asyncio.sleep(0.02)
            url = f"http://{LOOPBACK}:{port}/v1/videos/{video_id(job_id)}/content"
            async with httpx.AsyncClient(headers=bearer("acme"), timeout=DEADLINE) as http:
                async with http.stream("GET", url) as answer:
                    assert answer.status_code == 200
                    assert answer.headers["content-length"] == str(len(FIRST) + len(REST))
                    chunks = answer.aiter_bytes()
                    got = b""
                    async with asyncio.timeout(DEADLINE):  # buffered whole: never gets here
                        while len(got) < len(FIRST):
                            got += await anext(chunks)
                    assert got[: len(FIRST)] == FIRST  # while S3 still holds back the rest
                    s3.release.set()
                    async for chunk in chunks:
                        got += chunk
                assert got == FIRST + REST
                part = await http.get(url, headers={"Range": "bytes=10-19"})
                assert part.status_code == 206
                assert part.content == (FIRST + REST)[10:20]
                assert part.headers["content-range"] == f"bytes 10-19/{len(FIRST + REST)}"
            assert s3.ranges == [None, "bytes=10-19"]
        finally:
            server.should_exit = True
            await running

"""Variant downloads (GET /videos/{id}/content) over aiohttp, for the storage service.

The same contract, errors and meaning as OpenAIVideosProvider's own download over httpx, at a
fraction of the CPU: aiohttp parses HTTP in C and streams without anyio's layers, and storage
makes three downloads per job (bench.storage_cpu). Each download is one client span in the
job's trace (observe.py: `GET .../videos/{video_id}/content`), its context sent upstream as
`traceparent`, and counted as endpoint `content`; the API key is a header, never in a span or
a log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from opentelemetry import propagate

from shared.config import UpstreamSettings
from shared.provider.errors import (
    ProviderMalformedResponse,
    ProviderNoAnswer,
    ProviderNotSent,
    ProviderUnavailable,
)
from shared.provider.ids import video_path
from shared.provider.observe import DEFAULT_PROVIDER, Upstream, observed
from shared.provider.openai_videos import CHUNK_BYTES, error_from
from shared.provider.port import Download
from shared.provider.wire import Variant

NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL)
"""Errors raised before any byte of the request left: no connection could be made."""


def no_answer(what: str, exc: BaseException) -> ProviderUnavailable:
    if isinstance(exc, NOT_SENT):
        return ProviderNotSent(f"{what}: {type(exc).__name__}")
    return ProviderNoAnswer(f"{what}: {type(exc).__name__}")


class AiohttpDownloads:
    """Downloads from `base_url` (e.g. http://host/v1) with `api_key`; one session, made on
    first use (inside the running loop) and closed by `aclose`. `provider` (the registry's
    name) labels its metrics."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 30.0,
        *,
        provider: str = DEFAULT_PROVIDER,
    ) -> None:
        self._base = base_url.rstrip("/") + "/"
        self.upstream = Upstream.of(base_url, provider)
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/binary",
            "Accept-Encoding": "identity",  # the file's own bytes, never a compressed copy
        }
        # sock_read bounds each wait for bytes, not the whole (possibly large) download.
        self._timeout = aiohttp.ClientTimeout(sock_connect=min(timeout, 10.0), sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_upstream(
        cls, upstream: UpstreamSettings, provider: str = DEFAULT_PROVIDER
    ) -> AiohttpDownloads:
        return cls(
            upstream.base_url, upstream.api_key.get_secret_value(), upstream.timeout_seconds,
            provider=provider,
        )  # fmt: skip

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, auto_decompress=False
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    @asynccontextmanager
    async def download(self, video_id: str, variant: Variant) -> AsyncIterator[Download]:
        what = f"download {variant}"
        with observed(self.upstream, "content") as call:
            call.span.set_attribute("clipline.variant", variant)
            headers: dict[str, str] = {}
            propagate.inject(headers)
            url = self._base + video_path(video_id, "content")
            try:
                response = await self._http().get(url, params={"variant": variant}, headers=headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise no_answer(what, exc) from exc
            try:
                call.answered(response.status)
                if not 200 <= response.status < 300:
                    try:
                        body = await response.read()
                    except (aiohttp.ClientError, TimeoutError, OSError):
                        body = b""
                    raise error_from(response.status, response.headers, body)
                encoding = response.headers.get("Content-Encoding", "identity").lower()
                if encoding != "identity":  # its length and sha256 would be the wrong bytes
                    raise ProviderMalformedResponse(
                        f"{what}: Content-Encoding {encoding[:40]}, asked for identity",
                        status=response.status,
                    )
                yield Download(
                    content_type=response.headers.get("Content-Type", "application/octet-stream"),
                    content_length=response.content_length,
                    chunks=self._chunks(response, what),
                )
            except BaseException:
                response.close()  # a connection with unread or broken bytes is not reused
                raise
            else:
                response.release()

    @staticmethod
    async def _chunks(response: aiohttp.ClientResponse, what: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderNoAnswer(f"{what} broke: {type(exc).__name__}") from exc

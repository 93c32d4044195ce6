"""OpenAI Videos API adapter: for api.openai.com, compatible gateways, the simulator. Calls go
over aiohttp when given one (shared/provider/calls.py: the services) or over httpx (tests, in
process against the simulator's ASGI app)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx
from pydantic import ValidationError

from shared.config import UpstreamSettings
from shared.provider.calls import AiohttpCalls, Answer
from shared.provider.errors import (
    ProviderError,
    ProviderInvalidId,
    ProviderMalformedResponse,
    ProviderNoAnswer,
    ProviderNotFound,
    ProviderNotSent,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    ProviderUnavailable,
)
from shared.provider.ids import checked_video_id, is_valid_video_id, video_path
from shared.provider.observe import DEFAULT_PROVIDER, Upstream, observed
from shared.provider.port import CreateVideo, Download, InputImage
from shared.provider.wire import UpstreamVideo, UpstreamVideoPage, Variant

CHUNK_BYTES = 1024 * 1024
RECENT_PAGES = 10
"""`recent(since=...)` reads at most this many pages (of up to 100 videos) back in time."""
PAGE_TRIES = 3
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Transport errors raised before any byte of the request left (a connection that could not be
made or taken from the pool, a URL httpx cannot send). Every other transport error (read or
write timeout, read or write error, a connection dropped, a protocol error) may come after the
upstream got the request."""


def transport_error(what: str, exc: httpx.TransportError) -> ProviderUnavailable:
    """The typed error for a request that got no HTTP answer: never sent, or answer lost."""
    message = f"{what}: {type(exc).__name__}"
    if isinstance(exc, NOT_SENT):
        return ProviderNotSent(message)
    return ProviderNoAnswer(message)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Delay asked for by the server: retry-after-ms, then retry-after (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for(response: httpx.Response | Answer) -> ProviderError:
    """Map a non-2xx response to a typed error, reading the {error: {...}} envelope if present."""
    status = response.status if isinstance(response, Answer) else response.status_code
    return error_from(status, response.headers, response.content)


def error_from(status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
    """The typed error for a non-2xx answer (any HTTP client): its status, headers and body."""
    message, code, param = f"HTTP {status}", None, None
    try:
        parsed = json.loads(body) if body else None
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
    except (ValueError, UnicodeDecodeError):
        pass
    if status == 429:
        return ProviderRateLimited(
            message, retry_after_seconds=retry_after_seconds(headers), code=code
        )
    if status == 404:
        return ProviderNotFound(message, status=status, code=code)
    if status in (408, 409) or status >= 500:
        return ProviderServerError(message, status=status, code=code)
    return ProviderRejected(message, status=status, code=code, param=param)


def _video(response: Answer, where: str) -> UpstreamVideo:
    """The Video in a 2xx answer; its id checked against the contract's pattern (an id that
    fails it is ProviderInvalidId: nothing may carry it into a URL, a key or a record)."""
    try:
        video = UpstreamVideo.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProviderMalformedResponse(
            f"upstream returned a body that is not a Video: {exc.error_count()} errors",
            status=response.status,
        ) from exc
    checked_video_id(video.id, where)
    return video


def derived_call(request: CreateVideo) -> tuple[str, str, dict[str, object]]:
    """The endpoint (observe.ENDPOINTS), URL and JSON body of a remix, edit or extension
    (reference §7): the source video
    by id, in the path (remix) or as `video: {"id": ...}`; `seconds` (an extension's added
    segment) a string on the wire. ProviderInvalidId for a source id off the pattern."""
    source = checked_video_id(request.source_video_id or "", f"{request.kind} source")
    match request.kind:
        case "remix":
            return "remix", video_path(source, "remix"), {"prompt": request.prompt}
        case "edit":
            return "edit", "videos/edits", {"prompt": request.prompt, "video": {"id": source}}
        case "extend":
            body = {"prompt": request.prompt, "seconds": str(request.seconds)}
            return "extend", "videos/extensions", body | {"video": {"id": source}}
    raise ValueError(f"no upstream call for kind {request.kind!r}")


class Downloads(Protocol):
    """Where `download` goes when the provider is given one (shared/provider/downloads.py)."""

    def download(
        self, video_id: str, variant: Variant
    ) -> AbstractAsyncContextManager[Download]: ...


class OpenAIVideosProvider:
    """VideoProvider for the `/v1/videos` contract. The client carries base URL and API key.
    `downloads`, when given, serves `download` (storage's cheaper streaming client); `calls`,
    when given, makes every other call (the same contract over aiohttp). `provider` (the
    registry's name) labels the metrics of the calls made over httpx (the aiohttp clients
    carry their own)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        downloads: Downloads | None = None,
        calls: AiohttpCalls | None = None,
        *,
        provider: str = DEFAULT_PROVIDER,
    ) -> None:
        self._client = client
        self._downloads = downloads
        self._calls = calls
        self._upstream = Upstream.of(str(client.base_url), provider)

    @classmethod
    def client_for(cls, upstream: UpstreamSettings) -> httpx.AsyncClient:
        """The client for the configured upstream (CLIPLINE_UPSTREAM_*)."""
        return cls.client(
            upstream.base_url, upstream.api_key.get_secret_value(), upstream.timeout_seconds
        )

    @classmethod
    def client(cls, base_url: str, api_key: str, timeout: float = 30.0) -> httpx.AsyncClient:
        """An httpx client for `base_url` (e.g. http://host/v1) authenticating with `api_key`."""
        return httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
        )

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, object] | None = None,
        form: tuple[Mapping[str, str], InputImage] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        if self._calls is not None:
            answer = await self._calls.send(
                endpoint, method, url, params=params, json=json, form=form, headers=headers
            )
        else:
            with observed(self._upstream, endpoint) as call:
                answer = await self._send_httpx(
                    method, url, params=params, json=json, form=form, headers=headers
                )
                call.answered(answer.status)
        if answer.is_success:
            return answer
        raise error_for(answer)

    async def _send_httpx(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        json: Mapping[str, object] | None,
        form: tuple[Mapping[str, str], InputImage] | None,
        headers: Mapping[str, str] | None,
    ) -> Answer:
        files = None
        data = None
        if form is not None:
            data, image = form
            files = {"input_reference": (image.filename, image.data, image.content_type)}
        try:
            response = await self._client.request(
                method, url, params=params, json=json, data=data, files=files, headers=headers
            )
        except httpx.TransportError as exc:
            raise transport_error(f"{method} {url}", exc) from exc
        return Answer(response.status_code, response.headers, response.content)

    async def create(self, request: CreateVideo) -> UpstreamVideo:
        headers = {
            "X-Client-Request-Id": request.client_request_id,
            "Idempotency-Key": request.client_request_id,
        }
        if request.kind != "generate":
            endpoint, url, body = derived_call(request)
            response = await self._send(endpoint, "POST", url, json=body, headers=headers)
            return _video(response, f"{request.kind} answer")
        fields = {
            "prompt": request.prompt,
            "model": request.model,
            "size": request.size,
            "seconds": str(request.seconds),  # a string on the wire
        }
        image = request.input_reference
        if image is None:
            # JSON: accepted by every version of the contract.
            response = await self._send("create", "POST", "videos", json=fields, headers=headers)
        else:
            # An image file can only travel as multipart (the file part `input_reference`).
            response = await self._send(
                "create", "POST", "videos", form=(fields, image), headers=headers
            )
        return _video(response, "create answer")

    async def recent(self, limit: int = 100, since: int | None = None) -> list[UpstreamVideo]:
        """Listed videos whose id fails the contract's pattern are left out: no create of
        clipline's can have one (its answer would have been refused), so none is adopted."""
        params = {"limit": str(max(1, min(100, limit))), "order": "desc"}
        videos: list[UpstreamVideo] = []
        for _ in range(RECENT_PAGES):
            page = await self._page(params)
            videos += [v for v in page.data if is_valid_video_id(v.id)]
            if since is None or not page.has_more or not page.data:
                break
            oldest = page.data[-1].created_at
            if oldest is not None and oldest < since:
                break  # everything further back is older still
            params["after"] = page.data[-1].id  # a query value: httpx escapes it
        return videos

    async def _page(self, params: dict[str, str]) -> UpstreamVideoPage:
        """One page of the list; a read is safe to repeat, so a page that failed (5xx, no
        connection, no answer) is asked again a few times before the whole listing fails."""
        for _ in range(PAGE_TRIES - 1):
            with contextlib.suppress(ProviderUnavailable):
                return await self._read_page(params)
        return await self._read_page(params)

    async def _read_page(self, params: dict[str, str]) -> UpstreamVideoPage:
        response = await self._send("list", "GET", "videos", params=params)
        try:
            return UpstreamVideoPage.model_validate_json(response.content)
        except ValidationError as exc:
            raise ProviderMalformedResponse(
                f"upstream returned a body that is not a list of videos: {exc.error_count()}",
                status=response.status,
            ) from exc

    async def retrieve(self, video_id: str) -> tuple[UpstreamVideo, float | None]:
        response = await self._send("retrieve", "GET", video_path(video_id))
        poll_after: float | None = None
        raw = response.headers.get("openai-poll-after-ms")
        if raw:
            try:
                poll_after = max(0.0, float(raw) / 1000.0)
            except ValueError:
                poll_after = None
        video = _video(response, "retrieve answer")
        if video.id != video_id:
            raise ProviderInvalidId(
                f"retrieve answer: asked for {video_id!r}, answered about {video.id!r}"
            )
        return video, poll_after

    def download(self, video_id: str, variant: Variant) -> AbstractAsyncContextManager[Download]:
        if self._downloads is not None:
            return self._downloads.download(video_id, variant)
        return self._download(video_id, variant)

    @asynccontextmanager
    async def _download(self, video_id: str, variant: Variant) -> AsyncIterator[Download]:
        request = self._client.build_request(
            "GET",
            video_path(video_id, "content"),
            params={"variant": variant},
            headers={"Accept": "application/binary"},
        )
        with observed(self._upstream, "content") as call:
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise transport_error(f"download {variant}", exc) from exc
            call.answered(response.status_code)
        try:
            if not response.is_success:
                await response.aread()
                raise error_for(response)
            length = response.headers.get("content-length")
            yield Download(
                content_type=response.headers.get("content-type", "application/octet-stream"),
                content_length=int(length) if length and length.isdigit() else None,
                chunks=self._chunks(response, variant),
            )
        finally:
            await response.aclose()

    @staticmethod
    async def _chunks(response: httpx.Response, variant: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                yield chunk
        except httpx.TransportError as exc:
            raise ProviderNoAnswer(f"download {variant} broke: {type(exc).__name__}") from exc

    async def delete(self, video_id: str) -> None:
        await self._send("delete", "DELETE", video_path(video_id))

"""The API calls of the Videos contract (create, retrieve, list, delete) over aiohttp.

Same requests, answers and typed errors as OpenAIVideosProvider's httpx path (which in-process
tests keep using), at a fraction of the CPU: the submitter's creates and the poller's retrieves
are one call per job each, and httpx's layers (anyio, httpcore, its OpenTelemetry wrapper) cost
more than the call's own work (bench.e2e). Each call is one client span in the job's trace
(observe.py: named by its endpoint's template, HTTP semantic conventions), its context sent
upstream as `traceparent`, and counted by endpoint and status; the API key is a header, never
in a span or a log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from opentelemetry import propagate

from shared.config import UpstreamSettings
from shared.provider.errors import ProviderNoAnswer, ProviderNotSent, ProviderUnavailable
from shared.provider.observe import DEFAULT_PROVIDER, Upstream, observed
from shared.provider.port import InputImage

NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL)
"""Errors raised before any byte of the request left: no connection could be made. Every other
error (a pooled connection the server closed, a read timeout, a broken answer) may come after
the upstream got the request: the caller must treat the call's effect as unknown."""


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, read whole: status, headers (looked up without regard to case), body."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


def no_answer(what: str, exc: BaseException) -> ProviderUnavailable:
    if isinstance(exc, NOT_SENT):
        return ProviderNotSent(f"{what}: {type(exc).__name__}")
    return ProviderNoAnswer(f"{what}: {type(exc).__name__}")


class AiohttpCalls:
    """Calls to `base_url` (e.g. http://host/v1) with `api_key`; one session, made on first
    use (inside the running loop) and closed by `aclose`. `provider` (the registry's name)
    labels its metrics."""

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
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(sock_connect=min(timeout, 10.0), sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_upstream(
        cls, upstream: UpstreamSettings, provider: str = DEFAULT_PROVIDER
    ) -> AiohttpCalls:
        return cls(
            upstream.base_url, upstream.api_key.get_secret_value(), upstream.timeout_seconds,
            provider=provider,
        )  # fmt: skip

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, object] | None = None,
        form: tuple[Mapping[str, str], InputImage] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request to `endpoint` (observe.ENDPOINTS: its span and labels); the answer
        whatever its status. ProviderNotSent when no connection could be made,
        ProviderNoAnswer when the request may have arrived but no answer did."""
        what = f"{method} {path}"
        sent = dict(headers or {})
        data: aiohttp.FormData | None = None
        if form is not None:
            fields, image = form
            data = aiohttp.FormData()
            for name, value in fields.items():
                data.add_field(name, value)
            data.add_field(
                "input_reference", image.data,
                filename=image.filename, content_type=image.content_type,
            )  # fmt: skip
        with observed(self.upstream, endpoint) as call:
            propagate.inject(sent)
            try:
                async with self._http().request(
                    method, self._base + path, params=params, json=json, data=data, headers=sent
                ) as response:
                    call.answered(response.status)
                    body = await response.read()
                    return Answer(response.status, response.headers, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise no_answer(what, exc) from exc

"""Streamed single PUTs (S3 PutObject) on the event loop, over aiohttp, SigV4-signed (sigv4.py).

Why not minio for these: its client blocks, so every call is a thread hop, and it reads a small
object whole before sending it. A small asset (length known, at most one part) is the common
case and costs storage most per job (bench.storage_cpu), so it goes here: the upstream's chunks
go straight into the request body, no thread, no copy. Larger or unknown-length objects keep
minio's multipart upload (services/storage/adapters.py).

The payload is sent UNSIGNED-PAYLOAD (as AWS documents for streaming a body of known length):
the signature covers the method, key, headers and length, and S3 stores the object only when
exactly `length` bytes arrived; storage checks the length and computes the sha256 on the way.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import yarl

from services.storage.ports import StoreUnavailable
from services.storage.sigv4 import presign_get, sign_headers, uri_path

BUSY_CODES = frozenset({"ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout"})
"""S3 error codes that mean "busy now" (an outage to wait out), not a refusal."""
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
MIN_BYTES_PER_SECOND = 64 * 1024


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """Where and as whom: `endpoint` is host:port (as minio takes it)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False
    region: str = "us-east-1"
    public_url: str | None = None
    """scheme://host[:port] presigned URLs for callers outside name (None: `endpoint`'s)."""


def _host(url: str) -> str:
    """The Host header a client sends for `url` (its port only when not the scheme's default)."""
    parsed = yarl.URL(url)
    host = parsed.raw_host or ""
    return host if parsed.is_default_port() else f"{host}:{parsed.port}"


class S3RequestError(Exception):
    """S3 answered a request with an error it will give again (not an outage): `code` is S3's
    error code (e.g. NoSuchBucket, AccessDenied), `status` the HTTP status."""

    def __init__(self, message: str, *, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class LengthMismatchError(ValueError):
    """The source gave fewer bytes than the declared length (the request is cut before S3 has
    the whole body: nothing is stored), or more while the PUT still read it (S3 answering after
    exactly `length` bytes stores those, and the caller's own length check sees the rest)."""


class S3Puts:
    """PutObject over one aiohttp session, made on first use (inside the running loop)."""

    def __init__(
        self,
        endpoint: S3Endpoint,
        *,
        connect_seconds: float = 5.0,
        read_seconds: float = 60.0,
        min_bytes_per_second: float = MIN_BYTES_PER_SECOND,
    ) -> None:
        self._endpoint = endpoint
        self._base = f"{'https' if endpoint.secure else 'http'}://{endpoint.endpoint}"
        self._public = endpoint.public_url or self._base
        self._timeout = aiohttp.ClientTimeout(sock_connect=connect_seconds, sock_read=read_seconds)
        self._connect_seconds, self._read_seconds = connect_seconds, read_seconds
        self._min_rate = min_bytes_per_second
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def signed_headers(
        self, method: str, path: str, headers: Mapping[str, str], now: datetime
    ) -> dict[str, str]:
        """`headers` plus Host, x-amz-date, x-amz-content-sha256 and the SigV4 Authorization."""
        e = self._endpoint
        return sign_headers(
            method=method, host=e.endpoint, path=path, headers=headers,
            access_key=e.access_key, secret_key=e.secret_key, region=e.region, now=now,
        )  # fmt: skip

    def presign(
        self, bucket: str, key: str, seconds: int, now: datetime, *, internal: bool = False
    ) -> str:
        """A presigned GET URL of the object, valid `seconds` from `now` (no request): on the
        public URL (`public_url`, for callers outside), or `internal` on the services' own
        endpoint. The host is part of the signature, so each is signed for its own."""
        e = self._endpoint
        base, host = (self._base, e.endpoint) if internal else (self._public, _host(self._public))
        return presign_get(
            base=base, host=host, path=uri_path(bucket, key),
            access_key=e.access_key, secret_key=e.secret_key, region=e.region, now=now,
            expires_seconds=seconds,
        )  # fmt: skip

    async def put(
        self,
        bucket: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        length: int,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> None:
        """Stream `chunks` (exactly `length` bytes) to `bucket`/`key`. An error of `chunks`
        propagates as itself (nothing stored); LengthMismatchError when they are not `length`
        bytes; StoreUnavailable when S3 cannot be reached or is busy; S3RequestError for any
        other answer but success (a redirect included: the body is not sent twice)."""
        path = uri_path(bucket, key)
        url = f"{self._base}{path}"
        headers = self.signed_headers(
            "PUT",
            path,
            {
                "Content-Type": content_type,
                "Content-Length": str(length),
                **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
            },
            datetime.now(UTC),
        )
        source: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            try:
                async for chunk in chunks:
                    sent += len(chunk)
                    if sent > length:  # never send S3 a byte past the declared length
                        raise LengthMismatchError(f"more than the declared {length} bytes")
                    yield chunk
                if sent != length:  # cut the request: S3 keeps nothing of a short body
                    raise LengthMismatchError(f"{sent} bytes of the declared {length}")
            except Exception as exc:  # not GeneratorExit or a cancellation: those are ours
                source[:] = [exc]
                raise

        # aiohttp times reads only once the body is sent: the whole PUT gets a deadline too
        # (a body of up to a part at 64 KiB/s at least), or a stalled S3 would hold it forever.
        limit = self._connect_seconds + self._read_seconds + length / self._min_rate
        try:
            async with asyncio.timeout(limit):
                async with self._http().put(
                    yarl.URL(url, encoded=True), data=body(), headers=headers,
                    allow_redirects=False,  # a streamed body cannot be sent twice
                ) as response:  # fmt: skip
                    answer = await response.read()
                    status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if source:  # the request failed because its source did: that error, not S3's
                raise source[0] from None
            raise StoreUnavailable(f"S3 unreachable: {type(exc).__name__}: {exc}"[:500]) from exc
        if source:
            raise source[0]
        if 200 <= status < 300:
            return
        match = _CODE.search(answer)
        code = match.group(1).decode(errors="replace") if match else None
        if status >= 500 or code in BUSY_CODES:
            raise StoreUnavailable(f"S3 busy: HTTP {status} {code or ''}".strip())
        raise S3RequestError(f"S3 refused PUT {key}: HTTP {status} {code or ''}", status=status,
                             code=code)  # fmt: skip

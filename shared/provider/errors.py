"""Typed upstream errors: callers decide retry vs. fail by type, never by parsing text."""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every upstream error. `retryable` tells whether the same call may succeed later."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class ProviderUnavailable(ProviderError):
    """Network failure, timeout or 5xx: the request may or may not have been processed."""

    retryable = True


class ProviderRateLimited(ProviderError):
    """429: wait `retry_after_seconds` (from retry-after-ms / retry-after) before trying again."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float | None,
        status: int = 429,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after_seconds = retry_after_seconds


class ProviderRejected(ProviderError):
    """4xx other than 404/429: the request itself is wrong; retrying will not help."""

    def __init__(
        self, message: str, *, status: int, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.param = param


class ProviderNotFound(ProviderError):
    """404: the upstream object does not exist (deleted, expired or never created)."""


class ProviderMalformedResponse(ProviderError):
    """A 2xx response whose body does not match the contract."""

    retryable = True

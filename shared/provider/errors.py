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
    """Network failure, timeout or 5xx: the request may or may not have been processed. The
    subclasses below say how much is known; a caller that only retries catches this one."""

    retryable = True


class ProviderNotSent(ProviderUnavailable):
    """The request never left: no connection (refused, DNS, connect timeout) or no free one in
    the pool. The upstream cannot have acted on it, so a create may simply be sent again."""


class ProviderNoAnswer(ProviderUnavailable):
    """The request was sent (or partly sent) and its answer lost: a read or write timeout, a
    connection dropped mid-exchange. A create may exist upstream without clipline knowing."""


class ProviderServerError(ProviderUnavailable):
    """An explicit 5xx (or 408/409) answer: the upstream says it failed, and usually made
    nothing, but a create is reconciled before it is sent again."""


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


class ProviderInvalidId(ProviderError):
    """An id that is not one of the provider's (shared/provider/ids.py): in an upstream answer
    (which broke the contract), or handed to the adapter (a record or event holding no id of
    this provider). Never put in a URL; asking again will not change it."""

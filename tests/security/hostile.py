"""Hostile request bodies for the admin API: each must be answered 4xx with the envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator

LIMIT = 64 * 1024
ADMIN_WRITES = [
    ("PUT", "/v1/admin/budgets/global/daily"),
    ("POST", "/v1/admin/disputes/acme/job_" + "a" * 32),
    ("POST", "/v1/admin/keys"),
]
"""Every admin endpoint that reads a body."""


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


MALFORMED: dict[str, tuple[bytes, int]] = {
    "100k-deep": (deep(100_000), 413),
    "30k-deep-within-limit": (deep(30_000), 422),
    "50MB-number": (b"1" * (50 * 1024 * 1024), 413),
    "60k-digit-number": (b'{"limit_micros": ' + b"9" * 60_000 + b"}", 422),
    "exponent-bomb": (b'{"limit_usd": "1e999999999", "amount_usd": "1e999999999"}', 422),
    "float-bomb": (b'{"limit_usd": 1e999, "amount_usd": 1e999}', 422),
    "not-json": (b"{nope", 422),
    "not-utf8": (b"\xff\xfe\x00", 422),
    "empty": (b"", 422),
    "a-list": (b"[1, 2]", 422),
    "a-string": (b'"x"', 422),
    "wrong-types": (b'{"limit_usd": {}, "tenant": 7, "name": [], "resolution": []}', 422),
    "bool-amounts": (b'{"limit_micros": true, "tenant": true, "resolution": true}', 422),
    "null-everything": (b'{"limit_usd": null, "tenant": null, "resolution": null}', 422),
    "negative": (b'{"limit_micros": -1, "tenant": "-x", "resolution": "charged"}', 422),
    "control-chars": (b'{"tenant": "acme", "name": "a\\u0000b", "limit_usd": "\\u0000"}', 422),
}


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes sent in chunks without a Content-Length (chunked transfer)."""
    while total > 0:
        yield b"1" * min(size, total)
        total -= size

"""Input images of jobs in the JetStream object store (events carry only a reference)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore


class InputStore(Protocol):
    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes: ...


class InputMissingError(LookupError):
    """The referenced input image is gone (expired or never stored)."""


class ObjectInputStore:
    def __init__(self, store: Callable[[], Awaitable[ObjectStore]]) -> None:
        self._store = store

    async def put(self, name: str, data: bytes) -> None:
        await (await self._store()).put(name, data)

    async def get(self, name: str) -> bytes:
        try:
            result = await (await self._store()).get(name)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise InputMissingError(name) from exc
        return bytes(result.data or b"")

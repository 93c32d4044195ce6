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
        """Store `data` as `name` once. Names are content hashes, so an existing object is
        already these bytes: it is left alone (replacing one would purge the old chunks, a
        stream purge no service identity may do)."""
        store = await self._store()
        try:
            info = await store.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            info = None
        if info is None or info.deleted:
            await store.put(name, data)

    async def get(self, name: str) -> bytes:
        try:
            result = await (await self._store()).get(name)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise InputMissingError(name) from exc
        return bytes(result.data or b"")

"""The retention task of a storage process (CLIPLINE_S3_RETENTION_DAYS > 0): soon after the start
and then every CLIPLINE_S3_RETENTION_SWEEP_SECONDS (jittered), it writes the lifecycle rule when
it could not yet, and sweeps the bucket where the S3 server does not expire objects itself."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from services.storage.domain import sweep_delay
from services.storage.ports import RetentionMode, RetentionStore, StoreUnavailable
from shared.messaging import periodically

log = logging.getLogger("clipline.storage")


async def retention_pass(store: RetentionStore, now: datetime) -> int | None:
    """One look at retention; never raises (S3 down or any other error is a warning, and the
    next pass tries again). Returns how many objects it swept, None when it did not sweep."""
    try:
        mode = store.retention or await store.apply_retention()
        if mode is not RetentionMode.SWEEP:
            return None  # the server expires objects, or there is no bucket yet
        swept = await store.sweep_expired(now)
    except StoreUnavailable as exc:
        log.warning("storage: retention: %s; trying again at the next pass", exc)
        return None
    except Exception as exc:
        log.warning("storage: retention pass failed: %s: %s", type(exc).__name__, exc)
        return None
    if swept:
        log.info("storage: retention: deleted %d expired object(s)", swept)
    return swept


def retention_task(
    store: RetentionStore,
    every: float,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    fraction: Callable[[], float] = random.random,
) -> AbstractAsyncContextManager[None]:
    """Run retention passes while the block runs (the first soon, then every `every` seconds,
    jittered); leaving it stops them (a pass under way is cancelled: its deletes are
    idempotent, the next start does the rest)."""
    return periodically(
        lambda run: sweep_delay(every, fraction(), first=run == 0),
        lambda: retention_pass(store, clock()),
    )

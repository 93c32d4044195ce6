"""The embedded stack's API keys for the local CLI: one per tenant, kept in the stack folder.

`clipline up` makes the `default` tenant's key (`<home>/api-key`); a command run with
`--tenant T` uses `<home>/api-key.T`, made through the admin API on first use (the local CLI is
the stack's operator: it holds the admin token). Each file is 0600 and the key is never logged
or recorded in stack.json. `--api-key` or CLIPLINE_API_KEY overrides them (any deployment).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

from clipline import admin_token
from clipline.servers import ServerError
from shared.apikeys import parse

ENV = "CLIPLINE_API_KEY"
FILE = "api-key"
DEFAULT_TENANT = "default"
NAME = "clipline-cli"


def file_for(tenant: str) -> str:
    return FILE if tenant == DEFAULT_TENANT else f"{FILE}.{tenant}"


def chosen(explicit: str | None) -> str | None:
    """A key the user gave (`--api-key`, else CLIPLINE_API_KEY), or None."""
    return explicit or os.environ.get(ENV) or None


RETRY_DELAYS = (0.25, 1.0, 2.0, 4.0)
"""Pauses before each retry of a 503 (NATS between leaders: a cluster node went down)."""


def _request(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One admin request, repeated after a pause while the answer is 502/503/504 (a POST of
    a key too: a key stored before its answer failed is never handed out, so never used)."""
    for delay in RETRY_DELAYS:
        response = http.request(method, path, **kwargs)
        if response.status_code not in (502, 503, 504):
            return response
        time.sleep(delay)  # a backoff, not a synchronisation
    return http.request(method, path, **kwargs)


def ensure(home: Path, tenant: str, admin_url: str, token: str) -> str:
    """`tenant`'s kept key when the admin API still lists it unrevoked, else a new one, kept."""
    kept = admin_token.read(home, file_for(tenant))
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=admin_url, headers=headers, timeout=30) as http:
            parsed = parse(kept) if kept else None
            if parsed is not None:
                listed = _request(http, "GET", "/v1/admin/keys", params={"tenant": tenant})
                listed.raise_for_status()
                live = {k["id"] for k in listed.json()["keys"] if k["revoked_at"] is None}
                if parsed[0] in live:
                    return str(kept)
            made = _request(http, "POST", "/v1/admin/keys", json={"tenant": tenant, "name": NAME})
            made.raise_for_status()
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        # never the response text: a created key would be in it
        raise ServerError(f"cannot make an API key for tenant {tenant!r}: {exc!r}"[:300]) from None
    key = str(made.json()["key"])
    admin_token.write(home, key, file_for(tenant))
    return key

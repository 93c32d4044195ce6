"""`clipline webhooks set|show|rotate|clear TENANT`: a tenant's webhook endpoint and secret."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

from clipline.stack import require
from clipline.webhook_secret import new as new_secret
from services.intake.callbacks import Endpoint, url_problem
from services.intake.callbacks_kv import KvCallbacks
from shared.config import nats_servers
from shared.contracts.ids import is_valid_tenant
from shared.streams import CALLBACKS_BUCKET


class WebhooksError(SystemExit):
    """A refused argument or an unreachable NATS: one clear line, exit status 1."""


def nats_target(home: Path) -> tuple[str, str]:
    """CLIPLINE_NATS_URL and CLIPLINE_NATS_CREDS (an identity that may write the bucket: the
    admin's), else the running stack's."""
    url, creds = os.environ.get("CLIPLINE_NATS_URL"), os.environ.get("CLIPLINE_NATS_CREDS")
    if url and creds:
        return url, creds
    state = require(home)
    return state.nats_url, state.nats_creds


async def _with_store(home: Path, act: Any) -> Any:
    url, creds = nats_target(home)
    try:
        nc = await nats.connect(nats_servers(url), user_credentials=creds, connect_timeout=5)
    except Exception as exc:
        raise WebhooksError(f"NATS at {url} unreachable: {exc}") from None
    try:
        js = nc.jetstream()

        async def kv() -> Any:
            return await js.key_value(CALLBACKS_BUCKET)

        return await act(KvCallbacks(kv))
    finally:
        await nc.close()


def _tenant(tenant: str) -> str:
    if not is_valid_tenant(tenant):
        raise WebhooksError(f"tenant {tenant!r} must match [a-z0-9][a-z0-9_-]{{0,62}}")
    return tenant


def _url(url: str | None) -> str | None:
    """Checked for form here; a private address is the deployment's call, at send time."""
    if url is None:
        return None
    problem = url_problem(url, allow_private=True)
    if problem is not None:
        raise WebhooksError(problem.replace("callback_url", "--url"))
    return url


def _shown(tenant: str, found: Endpoint | None) -> dict[str, object]:
    """What `show` prints: never the secret."""
    if found is None:
        return {"tenant": tenant, "configured": False}
    return {
        "tenant": tenant, "configured": True, "url": found.url,
        "updated_at": found.updated_at.isoformat(),
    }  # fmt: skip


def _set(args: argparse.Namespace) -> int:
    tenant, url = _tenant(args.tenant), _url(args.url)

    async def act(store: KvCallbacks) -> tuple[Endpoint, bool]:
        current = await store.endpoint(tenant)
        made = current is None
        secret = new_secret() if current is None else current.secret
        endpoint = Endpoint(secret=secret, url=url, updated_at=datetime.now(UTC))
        await store.set_endpoint(tenant, endpoint)
        return endpoint, made

    endpoint, made = asyncio.run(_with_store(args.home, act))
    if made:
        print(endpoint.secret)
        print(f"the signing secret of tenant {tenant}: shown this once, keep it secret")
    else:
        print(f"tenant {tenant}: signing secret unchanged (`clipline webhooks rotate` replaces it)")
    print(f"endpoint: {url or 'none (only jobs that name a callback_url get webhooks)'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    tenant = _tenant(args.tenant)

    async def act(store: KvCallbacks) -> Endpoint | None:
        return await store.endpoint(tenant)

    print(json.dumps(_shown(tenant, asyncio.run(_with_store(args.home, act))), indent=2))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    tenant = _tenant(args.tenant)

    async def act(store: KvCallbacks) -> Endpoint | None:
        current = await store.endpoint(tenant)
        if current is None:
            return None
        rotated = current.model_copy(
            update={"secret": new_secret(), "updated_at": datetime.now(UTC)}
        )
        await store.set_endpoint(tenant, rotated)
        return rotated

    rotated = asyncio.run(_with_store(args.home, act))
    if rotated is None:
        raise WebhooksError(f"tenant {tenant} has no webhook settings: `clipline webhooks set`")
    print(rotated.secret)
    print(f"the new signing secret of tenant {tenant}: shown this once; every attempt from now "
          "on is signed with it")  # fmt: skip
    return 0


def _clear(args: argparse.Namespace) -> int:
    tenant = _tenant(args.tenant)

    async def act(store: KvCallbacks) -> None:
        await store.set_endpoint(tenant, None)

    asyncio.run(_with_store(args.home, act))
    print(f"tenant {tenant}: webhook endpoint and secret removed (pending attempts now fail)")
    return 0


def add_commands(sub: Any) -> None:
    """Register `webhooks` on the CLI's subparsers."""
    w = sub.add_parser("webhooks", help="a tenant's webhook endpoint and signing secret")
    wsub = w.add_subparsers(dest="webhooks_command", required=True)
    st = wsub.add_parser("set", help="set the endpoint (a secret is made, and printed, once)")
    st.add_argument("tenant")
    st.add_argument("--url", default=None, help="receives every job's end (optional)")
    st.set_defaults(func=_set)
    sh = wsub.add_parser("show", help="the endpoint (never the secret)")
    sh.add_argument("tenant")
    sh.set_defaults(func=_show)
    rt = wsub.add_parser("rotate", help="a new signing secret (printed once)")
    rt.add_argument("tenant")
    rt.set_defaults(func=_rotate)
    cl = wsub.add_parser("clear", help="remove the endpoint and the secret")
    cl.add_argument("tenant")
    cl.set_defaults(func=_clear)

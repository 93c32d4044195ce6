"""The assets request on a real nats-server in operator mode: intake asks, storage answers (a
reply allowed by its response permission, not by any publish right on intake's inbox), and no
other service, nor a tenant, may ask."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.msg import Msg

from clipline.auth import AuthDir
from shared.contracts.assets import ASSETS_QUEUE, ASSETS_SUBJECT_FILTER, assets_subject
from shared.identities import SERVICES
from tests.security.test_nats_identities import Errors, connect, tenant  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


async def test_intake_asks_and_storage_answers_once(provisioned: str, nats_auth: AuthDir) -> None:
    storage_errors = Errors()
    storage = await connect(
        provisioned, nats_auth.creds_file("storage"), storage_errors,
        SERVICES["storage"].inbox_prefix,
    )  # fmt: skip
    intake = await connect(
        provisioned, nats_auth.creds_file("intake"), None, SERVICES["intake"].inbox_prefix
    )
    try:
        replied: list[str] = []

        async def answer(msg: Msg) -> None:
            replied.append(msg.reply)
            await msg.respond(b"pong:" + msg.data)

        await storage.subscribe(ASSETS_SUBJECT_FILTER, queue=ASSETS_QUEUE, cb=answer)
        await storage.flush()
        reply = await intake.request(assets_subject("acme"), b"ping", timeout=5)
        assert reply.data == b"pong:ping"
        # storage may answer a request, but not write into intake's inbox unasked
        inbox = replied[0]
        await storage.publish(inbox, b"unasked")
        await storage_errors.violation(inbox)
    finally:
        await intake.close()
        await storage.close()


@pytest.mark.parametrize("service", ["pricing_guard", "submitter", "poller"])
async def test_no_other_service_may_ask(provisioned: str, nats_auth: AuthDir, service: str) -> None:
    errors = Errors()
    client = await connect(
        provisioned, nats_auth.creds_file(service), errors, SERVICES[service].inbox_prefix
    )
    try:
        subject = assets_subject("acme")
        await client.publish(subject, b"{}")
        await errors.violation(subject)
        await client.subscribe(ASSETS_SUBJECT_FILTER)
        await errors.violation(ASSETS_SUBJECT_FILTER)
    finally:
        await client.close()


async def test_a_tenant_may_not_ask(provisioned: str, tenant: tuple[str, Path]) -> None:  # noqa: F811
    name, creds = tenant
    errors = Errors()
    client = await connect(provisioned, creds, errors)
    try:
        subject = assets_subject(name)
        await client.publish(subject, b"{}")
        await errors.violation(subject)
    finally:
        await client.close()

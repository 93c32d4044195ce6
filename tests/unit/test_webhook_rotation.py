"""CLIPLINE_WEBHOOK_SECRET may hold two secrets during a rotation."""

from __future__ import annotations

import base64
import secrets as random_secrets
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from services.poller.settings import PollerSettings


def test_a_rotation_accepts_either_secret_and_nothing_else() -> None:
    """CLIPLINE_WEBHOOK_SECRET with the old and the new secret: both senders verify, a third
    secret does not, and the error names no secret."""

    def new() -> str:
        return "whsec_" + base64.b64encode(random_secrets.token_bytes(32)).decode()

    old, fresh, stranger = new(), new(), new()
    verifier = PollerSettings(webhook_secret=f"{old} {fresh}").webhook()
    assert verifier is not None
    body = b'{"type": "video.completed"}'
    for secret in (old, fresh):
        now = datetime.now(UTC)
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_1", now, body.decode()),
        }
        verifier.verify(body, headers, json_parse=False)  # raises when it does not verify
    now = datetime.now(UTC)
    forged = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(stranger).sign("msg_2", now, body.decode()),
    }
    with pytest.raises(WebhookVerificationError) as refused:
        verifier.verify(body, forged, json_parse=False)
    assert old not in str(refused.value)
    assert fresh not in str(refused.value)
    with pytest.raises(ValueError, match="several: space-separated"):
        PollerSettings(webhook_secret=f"{old} whsec_")

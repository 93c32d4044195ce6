"""Signing test webhooks as the upstream does, with the standardwebhooks library."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_bm90LXRoZS1zYW1lLXNlY3JldC1hdC1hbGwh"


def event_body(video_id: str, kind: str = "video.completed") -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "created_at": int(datetime.now(UTC).timestamp()),
        "type": kind,
        "data": {"id": video_id},
    }
    return json.dumps(event).encode()


def signed(
    body: bytes,
    *,
    secret: str = SECRET,
    webhook_id: str | None = None,
    age: timedelta = timedelta(0),
) -> dict[str, str]:
    """The Standard Webhooks headers of `body`, signed `age` ago (negative: in the future)."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC) - age
    signature = Webhook(secret).sign(webhook_id, at, body.decode())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }

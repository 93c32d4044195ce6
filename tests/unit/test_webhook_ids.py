"""A signed webhook whose video id is not one of the upstream's (unicode, a path, a query) is
refused 400 `invalid_video_id` (the sender stops retrying), after the signature check and
before the id goes near a key or a URL; the upstream index never makes an invalid KV key."""

from __future__ import annotations

import pytest
from nats.js.kv import _is_key_valid
from standardwebhooks import Webhook

from services.poller.webhooks import Refused, Verified, verify
from shared.jobstore import _index_key
from tests.webhook_signing import OTHER_SECRET, SECRET, event_body, signed

VERIFIER = Webhook(SECRET)
INVALID = [
    "video_\u00e9t\u00e9",
    "\u0432\u0438\u0434\u0435\u043e_1",
    "video_\u0663",
    "../files/file_1",
    "video_x/../../files/file_1/content",
    "video_a%2f..",
    "video_a?variant=x",
    "video_a.b",
    "video_ a",
]


@pytest.mark.parametrize("video_id", INVALID)
def test_a_signed_webhook_with_an_invalid_video_id_is_refused_400(video_id: str) -> None:
    body = event_body(video_id)
    verdict = verify(VERIFIER, body, signed(body))
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (400, "invalid_video_id")
    assert "is not a video id" in verdict.detail


@pytest.mark.parametrize("video_id", INVALID[:3])
def test_the_signature_is_still_checked_first(video_id: str) -> None:
    body = event_body(video_id)
    verdict = verify(VERIFIER, body, signed(body, secret=OTHER_SECRET))
    assert isinstance(verdict, Refused)
    assert (verdict.status, verdict.reason) == (401, "invalid_signature")


def test_a_valid_video_id_is_still_verified() -> None:
    body = event_body("video_" + "0a" * 24)
    assert isinstance(verify(VERIFIER, body, signed(body)), Verified)


@pytest.mark.parametrize("video_id", [*INVALID, "video_ok", "video_" + "f" * 48])
def test_the_upstream_index_key_is_always_a_valid_kv_key(video_id: str) -> None:
    assert _is_key_valid(_index_key(video_id))

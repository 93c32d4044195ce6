"""Webhooks the simulator signs and POSTs, verified and parsed by the SDK's `webhooks.unwrap`;
and a job that moderation fails, end to end."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types import Video

from services.simulator.webhooks import new_secret
from tests.sdk.harness import MARKS, unique
from tests.sdk.webhook_receiver import Received, WebhookReceiver

pytestmark = list(MARKS)

MODERATION_MESSAGE = "Your request was blocked by our moderation system."


@pytest.fixture(scope="module")
def finished(client: openai.OpenAI, webhooks: WebhookReceiver) -> tuple[Video, Received]:
    """A job left to finish on its own, and the webhook that announced it."""
    video = client.videos.create(prompt=unique("a hot-air balloon at dawn"))
    return video, webhooks.wait_for(video.id)


def test_completed_job_sends_a_signed_event_that_unwraps(
    client: openai.OpenAI, finished: tuple[Video, Received]
) -> None:
    video, received = finished
    assert received.headers["content-type"].startswith("application/json")
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= received.headers.keys()

    # The SDK's event union has no video.* member (reference §8.1): it wraps the payload in some
    # other event class, so only the fields are meaningful.
    event: Any = client.webhooks.unwrap(received.body, received.headers)

    assert event.type == "video.completed"
    assert event.data.id == video.id
    assert event.id.startswith("evt_")
    # The event names the video only; it must not be sent before the video is done.
    assert client.videos.retrieve(video.id).status == "completed"


def test_unwrap_refuses_a_tampered_body_or_another_secret(
    client: openai.OpenAI, finished: tuple[Video, Received]
) -> None:
    video, received = finished
    forged = received.body.replace(video.id.encode(), b"video_" + b"0" * 48)
    assert forged != received.body

    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(forged, received.headers)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(received.body, received.headers, secret=new_secret())


def test_moderation_fails_the_job_and_sends_video_failed(
    client: openai.OpenAI, webhooks: WebhookReceiver
) -> None:
    # "moderation test" matches one of the simulator's default moderation patterns.
    video = client.videos.create_and_poll(prompt=unique("a moderation test scene"))

    assert video.status == "failed"
    assert video.error is not None
    assert (video.error.code, video.error.message) == ("moderation_blocked", MODERATION_MESSAGE)
    assert video.completed_at is not None
    assert video.expires_at is None
    with pytest.raises(openai.BadRequestError) as caught:
        client.videos.download_content(video.id)
    assert caught.value.code == "video_failed"

    received = webhooks.wait_for(video.id)
    event: Any = client.webhooks.unwrap(received.body, received.headers)
    assert event.type == "video.failed"
    assert event.data.id == video.id

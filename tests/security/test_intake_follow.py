"""Intake may read the jobs stream message by message and hear job events (to replay and follow
a job for GET /v1/jobs/{id}/events), and nothing more: no consumer of its own, so it can name,
change, delete or pull from no other service's durable."""

from __future__ import annotations

import json
import uuid

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from clipline.auth import AuthDir
from shared.contracts import Event, JobAcceptedV1
from shared.identities import SERVICES
from shared.streams import JOBS_STREAM_NAME
from tests.security.test_nats_identities import Errors, connect

pytestmark = pytest.mark.integration
INTAKE = SERVICES["intake"]
FILTER = "clipline.job.admitted.v1.*.*"


def hijack(durable: str) -> bytes:
    """A create request on the unnamed (ephemeral) subject whose config names a durable."""
    config = {"name": durable, "filter_subject": "clipline.job.accepted.v1.*.*",
              "ack_policy": "explicit"}  # fmt: skip
    return json.dumps({"stream_name": JOBS_STREAM_NAME, "config": config}).encode()


@pytest.fixture
async def durable(nc: Client) -> str:
    name = f"victim--{uuid.uuid4().hex[:8]}"
    config = ConsumerConfig(durable_name=name, filter_subject=FILTER, ack_policy=AckPolicy.EXPLICIT)
    await nc.jetstream().add_consumer(JOBS_STREAM_NAME, config)
    return name


async def test_the_unnamed_create_subject_would_change_a_durable(nc: Client, durable: str) -> None:
    """Why intake gets no consumer: the server applies this as an update of the durable."""
    reply = await nc.request(f"$JS.API.CONSUMER.CREATE.{JOBS_STREAM_NAME}", hijack(durable))
    info = await nc.jetstream().consumer_info(JOBS_STREAM_NAME, durable)
    await nc.jetstream().delete_consumer(JOBS_STREAM_NAME, durable)

    assert "error" not in json.loads(reply.data)
    assert info.config.filter_subject != FILTER


async def test_intake_reads_and_hears_a_jobs_events_and_touches_no_consumer(
    provisioned: str, nats_auth: AuthDir, nc: Client, durable: str
) -> None:
    job = f"job_{uuid.uuid4().hex}"
    subjects = Event.subject_filter_any("acme", job)
    errors = Errors()
    client = await connect(provisioned, nats_auth.creds_file("intake"), errors, INTAKE.inbox_prefix)
    try:
        heard = await client.subscribe(subjects)
        await client.flush()  # the server has the subscription before the event is stored
        stored = await nc.jetstream().publish(JobAcceptedV1.subject_filter("acme", job), b"{}")
        assert (await heard.next_msg(timeout=5)).subject.startswith("clipline.job.accepted.")
        js = client.jetstream(timeout=1.0)
        read = await js.get_msg(JOBS_STREAM_NAME, 1, subjects, next=True)
        assert read.seq == stored.seq

        for subject, payload in (
            (f"$JS.API.CONSUMER.CREATE.{JOBS_STREAM_NAME}", hijack(durable)),
            (f"$JS.API.CONSUMER.CREATE.{JOBS_STREAM_NAME}.{durable}", hijack(durable)),
            (f"$JS.API.CONSUMER.CREATE.{JOBS_STREAM_NAME}.{durable}.{FILTER}", hijack(durable)),
            (f"$JS.API.CONSUMER.DELETE.{JOBS_STREAM_NAME}.{durable}", b""),
            (f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM_NAME}.{durable}", b"1"),
        ):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await client.request(subject, payload, timeout=0.5)
            await errors.violation(subject)
        info = await nc.jetstream().consumer_info(JOBS_STREAM_NAME, durable)
        assert info.config.filter_subject == FILTER
        assert info.num_ack_pending == 0
    finally:
        await client.close()
        await nc.jetstream().delete_consumer(JOBS_STREAM_NAME, durable)

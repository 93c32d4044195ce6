"""Messages whose job cannot be recorded, in every event-consuming service: a subject whose
tenant or job token is invalid, a body naming another job than its subject, a job store that
refuses the key or cannot parse the record. Each is terminated and logged once (no traceback);
a store outage is still retried. Intake, whose subjects name no job, keeps its own refusals."""

from __future__ import annotations

import json
import logging

import nats.errors
import pytest
from nats.js.errors import InvalidKeyError

from services.intake.handlers import DURABLE as INTAKE_DURABLE
from services.intake.handlers import build_router as build_intake
from shared.contracts import JobFailedV1, JobRejectedV1, JobStatus
from shared.contracts.requests import REQUESTS_ROOT
from shared.jobstore import StoreConflictError
from shared.messaging import RETRY_CAP_SECONDS, Message, ServiceRouter
from shared.streams import JOBS, REQUESTS
from tests.component.harness import TENANT, new_job_id, running
from tests.component.support import FlakyJobStore, actions, settled, validation_error
from tests.component.test_delivery import (
    BY_NAME,
    harness_for,
    provider_untouched,
    seeded,
)
from tests.component.test_intake import deps as intake_deps
from tests.fakes import FakeProvider, InMemoryJobStore

SERVICES = list(BY_NAME)
BAD_TENANTS = ["Acme", "t$x", "t\u00fc", "_unknown", "a" * 64, "t@x"]
BAD_JOB_IDS = ["job_1", "x", "job_" + "A" * 32, "job_" + "0" * 31 + "\u00e9", "job_%2f%2e%2e"]
FOREVER = 10**9


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> bool:
    return all(r.exc_info is None and r.exc_text is None for r in caplog.records)


def subject_of(name: str, tenant: str, job_id: str) -> str:
    kind = BY_NAME[name].event(job_id).kind
    return f"clipline.job.{kind}.v1.{tenant}.{job_id}"


@pytest.mark.parametrize("tenant", BAD_TENANTS)
@pytest.mark.parametrize("name", SERVICES)
async def test_an_invalid_tenant_token_is_terminated_and_logged_once(
    name: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    service, provider = BY_NAME[name], FakeProvider()
    async with harness_for(service, provider) as h:
        job_id = new_job_id()
        subject = subject_of(name, tenant, job_id)
        for body in (b"{}", {**service.event(job_id).model_dump(mode="json"), "tenant": tenant}):
            caplog.clear()
            with caplog.at_level(logging.INFO):
                await h.send_raw(subject, body, None, type(service.event(job_id)).durable(name))
            logged = warnings(caplog)
            assert len(logged) == 1, logged
            assert "invalid_tenant" in logged[0].getMessage()
            assert no_tracebacks(caplog)
        assert actions(h.bus.actions(subject)) == ["term", "term"]
        assert h.bus.kinds() == [service.event(job_id).kind] * 2  # nothing announced
        assert h.jobs.records() == {}
        assert provider_untouched(provider)


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
@pytest.mark.parametrize("name", SERVICES)
async def test_an_invalid_job_token_is_terminated_and_logged_once(
    name: str, job_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    service, provider = BY_NAME[name], FakeProvider()
    async with harness_for(service, provider) as h:
        subject = subject_of(name, TENANT, job_id)
        with caplog.at_level(logging.INFO):
            await h.send_raw(
                subject, b"{}", "msg-1", type(service.event(new_job_id())).durable(name)
            )
        assert actions(h.bus.actions(subject)) == ["term"]
        logged = warnings(caplog)
        assert len(logged) == 1
        assert "invalid_job_id" in logged[0].getMessage()
        assert no_tracebacks(caplog)
        assert h.bus.events(JobFailedV1) == []
        assert provider_untouched(provider)


@pytest.mark.parametrize("other", ["job", "tenant"])
@pytest.mark.parametrize("name", SERVICES)
async def test_a_body_naming_another_job_than_its_subject_changes_nothing(
    name: str, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    service, provider = BY_NAME[name], FakeProvider()
    async with harness_for(service, provider) as h:
        victim, forged = seeded(h, service), seeded(h, service)
        before = dict(h.jobs.records())
        body = service.event(forged).model_dump(mode="json")
        if other == "tenant":
            body = service.event(victim).model_dump(mode="json") | {"tenant": "someone-else"}
        subject = service.event(victim).subject
        with caplog.at_level(logging.INFO):
            await h.send_raw(subject, body, "msg-forged", type(service.event(victim)).durable(name))
        assert actions(h.bus.actions(subject)) == ["term"]
        assert h.jobs.records() == before  # neither job changed
        assert h.bus.kinds() == [service.event(victim).kind]  # nothing announced
        assert provider_untouched(provider)
        logged = warnings(caplog)
        assert len(logged) == 1
        assert "subject_mismatch" in logged[0].getMessage()
        assert no_tracebacks(caplog)


UNRECORDABLE: dict[str, Exception] = {
    "refused-key": InvalidKeyError("acme.job_x"),
    "unparseable-record": validation_error(),
}


@pytest.mark.parametrize("error", list(UNRECORDABLE))
@pytest.mark.parametrize("name", SERVICES)
async def test_poison_whose_failure_cannot_be_recorded_is_terminated_once(
    name: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = BY_NAME[name]
    jobs = FlakyJobStore(UNRECORDABLE[error], failures=FOREVER)
    async with harness_for(service, FakeProvider(), jobs) as h:
        event = service.event(new_job_id())
        with caplog.at_level(logging.INFO):
            await h.send_raw(event.subject, b"{}", "msg-poison", type(event).durable(name))
        assert actions(h.bus.actions(event.subject)) == ["term"]
        assert h.bus.events(JobFailedV1) == []
        logged = warnings(caplog)
        assert len(logged) == 1, logged
        assert "cannot be recorded" in logged[0].getMessage()
        assert no_tracebacks(caplog)


@pytest.mark.parametrize("name", SERVICES)
async def test_a_handler_error_that_cannot_be_counted_is_terminated_once(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler fails (here: the store refuses the key), and counting the error on the
    record fails the same way: no retry can change that."""
    service, provider = BY_NAME[name], FakeProvider()
    jobs = FlakyJobStore(InvalidKeyError("acme.job_x"), failures=FOREVER)
    async with harness_for(service, provider, jobs) as h:
        job_id = seeded(h, service)
        event = service.event(job_id)
        with caplog.at_level(logging.INFO):
            await h.send(event)
        assert actions(h.outcomes(event)) == ["term"]
        assert h.bus.events(JobFailedV1) == []
        logged = warnings(caplog)
        assert len(logged) == 1, logged
        assert "cannot be recorded" in logged[0].getMessage()
        assert no_tracebacks(caplog)


TRANSIENT: dict[str, Exception] = {
    "nats-timeout": nats.errors.TimeoutError(),
    "no-servers": nats.errors.NoServersError(),
    "cas-contention": StoreConflictError("busy"),
    "os-error": ConnectionResetError("reset"),
}


@pytest.mark.parametrize("error", list(TRANSIENT))
@pytest.mark.parametrize("name", SERVICES)
async def test_poison_during_a_store_outage_is_retried_without_a_traceback(
    name: str, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    service = BY_NAME[name]
    jobs = FlakyJobStore(TRANSIENT[error], failures=1)
    async with harness_for(service, FakeProvider(), jobs) as h:
        job_id = seeded(h, service)
        event = service.event(job_id)
        with caplog.at_level(logging.INFO):
            await h.send_raw(event.subject, b"{}", "msg-poison", type(event).durable(name))
        assert settled(h.bus.actions(event.subject)) == [("nak", RETRY_CAP_SECONDS)]
        assert h.bus.events(JobFailedV1) == []
        logged = warnings(caplog)
        assert len(logged) == 1, logged
        assert "could not record the failure" in logged[0].getMessage()
        assert no_tracebacks(caplog)

        # The outage is over: the redelivery fails the job as poison, once.
        await h.send_raw(event.subject, b"{}", "msg-poison", type(event).durable(name), 2)
        assert settled(h.bus.actions(event.subject))[-1] == ("term", None)
        assert h.bus.one(JobFailedV1).reason == "poison_message"
        assert h.jobs.records()[job_id].status == JobStatus.FAILED


@pytest.mark.parametrize("name", SERVICES)
async def test_a_handler_error_during_a_store_outage_is_retried(name: str) -> None:
    service, provider = BY_NAME[name], FakeProvider()
    jobs = FlakyJobStore(nats.errors.TimeoutError(), failures=FOREVER)
    async with harness_for(service, provider, jobs) as h:
        job_id = seeded(h, service)
        event = service.event(job_id)
        await h.send(event)
        assert settled(h.outcomes(event)) == [("nak", RETRY_CAP_SECONDS)]


async def test_an_unexpected_recording_error_is_retried_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a store error clipline knows: a bug, retried (nothing lost), shown with its stack."""
    service = BY_NAME["storage"]
    jobs = FlakyJobStore(KeyError("surprise"), failures=FOREVER)
    async with harness_for(service, FakeProvider(), jobs) as h:
        event = service.event(new_job_id())
        with caplog.at_level(logging.INFO):
            await h.send_raw(event.subject, b"{}", "msg-poison", type(event).durable("storage"))
        assert settled(h.bus.actions(event.subject)) == [("nak", RETRY_CAP_SECONDS)]
        assert [r.exc_info is not None for r in warnings(caplog)] == [True]


async def test_intake_still_refuses_a_request_whose_subject_has_an_invalid_tenant() -> None:
    """Intake's subjects name no job: its own refusals answer them, not the job check."""

    async with running(build_intake(), intake_deps, jobs=InMemoryJobStore()) as h:
        subject = f"{REQUESTS_ROOT}.v1.T$x.{new_job_id()}"
        body = json.dumps({"prompt": "p", "model": "sora-2", "size": "1280x720", "seconds": 4})
        await h.send_raw(subject, body.encode(), "msg-1", INTAKE_DURABLE)
        assert actions(h.bus.actions(subject)) == ["ack"]
        assert h.bus.one(JobRejectedV1).reason


def raw_router(subject: str, durable: str, calls: list[str]) -> ServiceRouter:
    """A router with one consumer decoding nothing (FastStream's default), whose handler fails."""
    router = ServiceRouter("testsvc")
    stream = REQUESTS if subject.startswith(f"{REQUESTS_ROOT}.") else JOBS

    @router.on_subject(subject, durable, max_errors=3, stream=stream)
    async def handler(msg: Message) -> None:
        calls.append(msg.raw_message.subject)
        raise RuntimeError("broken")

    return router


async def test_a_failed_message_on_a_job_consumer_without_an_event_decoder_is_terminated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No decoder judged the subject, so the handler ran and failed: its error cannot be
    counted on any record, and no retry changes that."""
    calls: list[str] = []
    router = raw_router("clipline.job.admitted.v1.*.*", "testsvc--raw", calls)
    async with running(router, lambda _: None) as h:
        subject = f"clipline.job.admitted.v1.t$x.{new_job_id()}"
        with caplog.at_level(logging.INFO):
            await h.send_raw(subject, b"{}", "msg-1", "testsvc--raw")
        assert calls == [subject]
        assert actions(h.bus.actions(subject)) == ["term"]
        logged = warnings(caplog)
        assert len(logged) == 1
        assert "invalid_tenant" in logged[0].getMessage()
        assert "RuntimeError: broken" in logged[0].getMessage()
        assert no_tracebacks(caplog)


async def test_a_consumer_whose_subjects_name_no_job_counts_deliveries_as_before() -> None:
    """Like intake's requests: an event-shaped subject there names no job to check or count."""
    calls: list[str] = []
    router = raw_router(f"{REQUESTS_ROOT}.>", "testsvc--requests", calls)
    async with running(router, lambda _: None) as h:
        subject = f"{REQUESTS_ROOT}.v1.t$x.{new_job_id()}"
        for delivery in (1, 2, 3):
            await h.send_raw(subject, b"{}", "msg-1", "testsvc--requests", delivery)
        assert settled(h.bus.actions(subject)) == [("nak", 0.5), ("nak", 1.0), ("term", None)]
        assert h.jobs.records() == {}

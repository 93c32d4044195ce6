"""Session fixtures of the SDK suite: the SDK check, a webhook receiver, the simulator, clients."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types import Video

from clipline.servers import stop_pid
from tests.sdk.harness import (
    Sdk,
    Simulator,
    expected_sdk,
    sdk_client,
    start_simulator,
    unique,
)
from tests.sdk.webhook_receiver import WebhookReceiver


def pytest_report_header() -> str:
    return f"openai SDK {openai.__version__} from {openai.__file__}"


@pytest.fixture(scope="session", autouse=True)
def sdk() -> Sdk:
    """The SDK under test; a run that imports another one than it expects fails every test."""
    expected, source = expected_sdk()
    found = openai.__version__
    if found != expected:
        pytest.fail(
            f"this run expects openai {expected} ({source}) but imported {found} from "
            f"{openai.__file__}: run `make install`, and check PYTHONPATH",
            pytrace=False,
        )
    return Sdk(found, int(found.split(".")[0]))


@pytest.fixture(scope="session")
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def simulator(
    tmp_path_factory: pytest.TempPathFactory, webhooks: WebhookReceiver
) -> Iterator[Simulator]:
    sim = start_simulator(tmp_path_factory.mktemp("simulator"), webhooks.url)
    try:
        yield sim
    finally:
        stop_pid(sim.proc.pid)


@pytest.fixture(scope="session")
def client(simulator: Simulator) -> Iterator[openai.OpenAI]:
    with sdk_client(simulator) as sim_client:
        yield sim_client


@pytest.fixture(scope="session")
def completed(client: openai.OpenAI) -> Video:
    """One finished 4 s landscape video, the source of downloads, remixes, edits, extensions."""
    video = client.videos.create_and_poll(
        prompt=unique("a lighthouse in drifting fog"), size="1280x720", seconds="4"
    )
    assert video.status == "completed", video
    return video

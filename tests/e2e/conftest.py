"""A stack shared by the e2e modules of the public surfaces (SSE events, job kinds, the remote
CLI, caller webhooks): each stack costs ~10 s to start and stop, and none of them needs one of
its own (they use their own tenants and jobs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clipline.stack import StackOptions, StackState
from tests.e2e.harness import running_stack
from tests.e2e.otlp_receiver import OtlpReceiver, running_receiver

CALLBACK_RETRY_SECONDS = 8
"""The first caller-webhook retry's wait on this stack (production: 30 s): long enough that
intake is killed and restarted before it comes (the delayed nak is the server's)."""


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """Where the shared stack's services export their spans (tests/e2e/test_trace.py)."""
    with running_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def surfaces_stack(
    tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver
) -> Iterator[StackState]:
    options = StackOptions(
        generation_seconds=1.5,
        poll_after_ms=200,
        env={
            "CLIPLINE_SIM_SMALL_ASSETS": "true",
            "CLIPLINE_CALLBACKS_RETRY_SECONDS": str(CALLBACK_RETRY_SECONDS),
            # Every service exports its spans (shortly after they end) to the receiver.
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    with running_stack(tmp_path_factory.mktemp("surfaces"), options) as state:
        yield state

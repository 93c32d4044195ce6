"""The openai-SDK suite's harness: the simulator as a real process, its control API, and helpers.

The suite runs once per SDK (see the Makefile's `sdk` target): with the `openai` pinned in
pyproject's dev extra, and with the 2.x release the Makefile installs beside the venv and puts
first on PYTHONPATH, naming it in CLIPLINE_EXPECT_OPENAI.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from clipline.servers import LOOPBACK, Proc, free_port, http_ok, spawn, stop_pid, wait_until
from services.simulator.webhooks import new_secret
from tests.conftest import repo_root

EXPECT_ENV = "CLIPLINE_EXPECT_OPENAI"
API_KEY = "sk-sim-sdk-suite"
QUEUE_SECONDS = 0.2
GENERATION_SECONDS = 0.6
# Well below the SDK's 1000 ms fallback, and several polls fit in one job: a poll helper that
# ignored `openai-poll-after-ms` shows up both in the count and in the spacing of its polls.
POLL_AFTER_MS = 150
STARTUP_TIMEOUT = 30.0

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
# What a text-only `videos.create` puts on the wire (reference §3.2): JSON until 2.26, then
# multipart always.
TEXT_ONLY_CREATE = {2: "application/json", 3: "multipart/form-data"}
# Every videos.* method warns from 2026-08 on (reference §0); the suite calls them on purpose.
SORA_DEPRECATED = "ignore:The Sora API is scheduled to permanently shut down:DeprecationWarning"
MARKS = (pytest.mark.filterwarnings(SORA_DEPRECATED), pytest.mark.timeout(60))
latest_sdk_only = pytest.mark.skipif(
    OPENAI_MAJOR < 3,
    reason=f"openai {openai.__version__} has no videos.edit/extend/create_character/"
    "get_character (they came with 2.27.0, March 2026)",
)


@dataclass(frozen=True)
class Sdk:
    version: str
    major: int


def expected_sdk() -> tuple[str, str]:
    """The openai version this run must import, and where that expectation comes from."""
    named = os.environ.get(EXPECT_ENV, "").strip()
    if named:
        return named, EXPECT_ENV
    pyproject = tomllib.loads((repo_root() / "pyproject.toml").read_text())
    for requirement in pyproject["project"]["optional-dependencies"]["dev"]:
        name, _, version = requirement.partition("==")
        if name.strip() == "openai":
            return version.strip(), "the openai pin in pyproject.toml"
    raise AssertionError("pyproject.toml's dev extra pins no openai version")


@dataclass(frozen=True)
class Simulator:
    proc: Proc
    root_url: str
    api_key: str
    webhook_secret: str

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def creates(self) -> list[dict[str, Any]]:
        """GET /control/creates: every create the simulator accepted, oldest first."""
        response = httpx.get(f"{self.root_url}/control/creates", timeout=10)
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()
        return records

    def create_record(self, video_id: str) -> dict[str, Any]:
        matches = [r for r in self.creates() if r["video_id"] == video_id]
        assert len(matches) == 1, f"{len(matches)} create records for {video_id}"
        return matches[0]


def start_simulator(log_dir: Path, webhook_url: str) -> Simulator:
    """`python -m services.simulator` on a free loopback port, fast timings, no rate limits."""
    port = free_port()
    secret = new_secret()
    env = {
        "CLIPLINE_SIM_HOST": LOOPBACK,
        "CLIPLINE_SIM_PORT": str(port),
        "CLIPLINE_SIM_API_KEY": API_KEY,
        "CLIPLINE_SIM_QUEUE_SECONDS": str(QUEUE_SECONDS),
        "CLIPLINE_SIM_GENERATION_SECONDS": str(GENERATION_SECONDS),
        "CLIPLINE_SIM_POLL_AFTER_MS": str(POLL_AFTER_MS),
        "CLIPLINE_SIM_CONTRACT": "2026-03",
        "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_SIM_FAULTS": "{}",
        "CLIPLINE_SIM_WEBHOOK_URL": webhook_url,
        "CLIPLINE_SIM_WEBHOOK_SECRET": secret,
    }
    argv = [sys.executable, "-m", "services.simulator"]
    proc = spawn("simulator", argv, log_dir / "simulator.log", env, repo_root())
    root_url = f"http://{LOOPBACK}:{port}"
    try:
        wait_until(http_ok(f"{root_url}/healthz"), "simulator", STARTUP_TIMEOUT, proc)
    except BaseException:
        stop_pid(proc.pid)
        raise
    return Simulator(proc, root_url, API_KEY, secret)


def sdk_client(simulator: Simulator, **options: Any) -> openai.OpenAI:
    """An SDK client of the simulator. No retries: every answer reaches the test as it was."""
    settings: dict[str, Any] = {
        "api_key": simulator.api_key,
        "base_url": simulator.base_url,
        "webhook_secret": simulator.webhook_secret,
        "max_retries": 0,
        "timeout": 30.0,
    }
    return openai.OpenAI(**(settings | options))


@dataclass(frozen=True)
class Sent:
    at: float  # time.monotonic() when the SDK handed the request to its HTTP client
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RequestLog:
    """Every request an SDK client sends, seen through an event hook of its own HTTP client."""

    sent: list[Sent] = field(default_factory=list)

    def __call__(self, request: Any) -> None:
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.sent.append(Sent(time.monotonic(), request.method, request.url.path, headers))

    def http_client(self) -> Any:
        # The SDK's own default client class: httpx in 2.x, httpx2 in 3.x.
        return openai.DefaultHttpxClient(event_hooks={"request": [self]})


def unique(text: str) -> str:
    """A prompt no other test uses."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def unchecked(value: str) -> Any:
    """A value the SDK's types forbid, sent anyway to see the server refuse it."""
    return value


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    """The error object of the response, checked for the envelope's four keys (reference §9.1)."""
    body = error.body
    assert isinstance(body, dict), body
    assert set(body) == {"message", "type", "param", "code"}, body
    assert error.request_id is not None, "no x-request-id"
    assert error.request_id.startswith("req_"), error.request_id
    return body

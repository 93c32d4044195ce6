"""The embedded stack's environment comes from the Settings classes: the names and values the
processes got when stack.py spelt them by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipline.servers import S3Server, ServerError
from clipline.stack import StackOptions, services_env, simulator_env

HOME = Path("/tmp/clipline-home")
WHSEC = "whsec_" + "B" * 44


def test_the_simulator_gets_what_it_always_got() -> None:
    assert simulator_env(HOME, StackOptions(), 18000, None) == {
        "CLIPLINE_SIM_HOST": "127.0.0.1",
        "CLIPLINE_SIM_PORT": "18000",
        "CLIPLINE_SIM_API_KEY": "sk-clipline-local",
        "CLIPLINE_SIM_GENERATION_SECONDS": "4.0",
        "CLIPLINE_SIM_QUEUE_SECONDS": "0.5",
        "CLIPLINE_SIM_POLL_AFTER_MS": "500",
        "CLIPLINE_SIM_ASSET_DIR": "/tmp/clipline-home/sim-assets",
        "CLIPLINE_SIM_STATE_DIR": "/tmp/clipline-home/sim-state",
    }


def test_with_webhooks_the_url_is_recorded_and_the_secret_is_not() -> None:
    url = "http://127.0.0.1:18083/webhooks/videos"
    env = simulator_env(HOME, StackOptions(generation_seconds=1.5), 1, (url, WHSEC))
    assert env["CLIPLINE_SIM_WEBHOOK_URL"] == url
    assert env["CLIPLINE_SIM_GENERATION_SECONDS"] == "1.5"
    assert WHSEC not in env.values()
    assert not [name for name in env if "SECRET" in name]


def test_a_setting_the_simulator_refuses_stops_up_with_a_clear_error() -> None:
    with pytest.raises(ServerError, match=r"^simulator: CLIPLINE_SIM_GENERATION_SECONDS: "):
        simulator_env(HOME, StackOptions(generation_seconds=-1), 1, None)


def test_the_services_get_what_they_always_got() -> None:
    s3 = S3Server(proc=None, port=18333, access_key="ak", secret_key="sk")  # type: ignore[arg-type]
    assert services_env("nats://127.0.0.1:14222", s3, "http://127.0.0.1:18000") == {
        "CLIPLINE_NATS_URL": "nats://127.0.0.1:14222",
        "CLIPLINE_HTTP_HOST": "127.0.0.1",
        "CLIPLINE_S3_ENDPOINT": s3.endpoint,
        "CLIPLINE_S3_ACCESS_KEY": "ak",
        "CLIPLINE_S3_SECRET_KEY": "sk",
        "CLIPLINE_S3_BUCKET": "clipline-assets",
        "CLIPLINE_UPSTREAM_BASE_URL": "http://127.0.0.1:18000/v1",
        "CLIPLINE_UPSTREAM_API_KEY": "sk-clipline-local",
        "CLIPLINE_POLL_DEFAULT_SECONDS": "1.0",
        "CLIPLINE_CALLBACKS_ALLOW_PRIVATE": "true",  # intake's: webhooks to local receivers
    }

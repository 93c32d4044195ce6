"""A process's environment from Settings instances: every Settings class reads back what it got."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from services.intake.settings import IntakeSettings
from services.poller.settings import PollerSettings
from services.pricing_guard.settings import PricingSettings
from services.simulator.faults import Faults
from services.simulator.settings import LogSettings, SimulatorSettings
from services.storage.settings import StorageSettings
from services.submitter.settings import SubmitterSettings
from shared.config import CommonSettings, S3Settings, UpstreamSettings
from shared.settings_env import SettingsError, env_name, settings_env, settings_from

WHSEC = "whsec_" + "A" * 44
# Values other than the defaults, of every kind the classes hold: str, int, float, bool, Path,
# Literal, SecretStr, dict, tuple, a nested model.
CASES: list[tuple[type[BaseSettings], dict[str, Any]]] = [
    (CommonSettings, {"nats_url": "nats://127.0.0.1:14222", "http_host": "::1", "http_port": 9,
                      "log_level": "DEBUG", "log_format": "json", "provider": "openai",
                      "registry_path": Path("/tmp/registry.toml")}),
    (S3Settings, {"endpoint": "127.0.0.1:19000", "access_key": "ak", "secret_key": "sk=/+x",
                  "secure": True, "bucket": "b", "presign_seconds": 60, "retention_days": 2,
                  "retention_sweep_seconds": 0.5}),
    (UpstreamSettings, {"base_url": "http://127.0.0.1:1/v1", "api_key": "sk-test",
                        "timeout_seconds": 2.5}),
    (PollerSettings, {"http_port": 1, "poll_default_seconds": 1.0, "webhook_secret": WHSEC,
                      "poll_webhook_safety_seconds": 3.25}),
    (SimulatorSettings, {"host": "127.0.0.1", "port": 1, "api_key": "sk-x",
                         "generation_seconds": 4.0, "poll_after_ms": 500, "small_assets": True,
                         "asset_dir": Path("/tmp/a"), "rate_limit_tier": "off",
                         "rpm": {"sora-2": 60}, "moderation_patterns": (r"\bx\b", "y"),
                         "faults": Faults(error_rate=0.5, error_statuses=(500, 503)),
                         "webhook_url": "http://127.0.0.1:2/h", "webhook_secret": WHSEC}),
    (LogSettings, {"log_level": "WARNING", "log_format": "json"}),
    (IntakeSettings, {"http_port": 2}),
    (PricingSettings, {"http_port": 3}),
    (SubmitterSettings, {"http_port": 4}),
    (StorageSettings, {"http_port": 5}),
]  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("CLIPLINE_", "OTEL_")):
            monkeypatch.delenv(name)
    return monkeypatch


def dump(settings: BaseModel) -> dict[str, Any]:
    reveal = {k: v.get_secret_value() for k, v in settings if isinstance(v, SecretStr)}
    return settings.model_dump() | reveal


@pytest.mark.parametrize(("cls", "values"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_the_environment_reads_back_as_the_instance(
    clean_env: pytest.MonkeyPatch, cls: type[BaseSettings], values: dict[str, Any]
) -> None:
    instance = settings_from(cls, values)
    assert instance.model_fields_set == set(values)
    env = settings_env(instance)
    assert set(env) == {env_name(cls, f) for f in values}
    for name, text in env.items():
        clean_env.setenv(name, text)
    read_back = cls()
    assert dump(read_back) == dump(instance)
    assert dump(read_back) != dump(cls.model_construct())  # the values were not the defaults


def test_names_are_the_prefix_and_the_field(clean_env: pytest.MonkeyPatch) -> None:
    assert env_name(S3Settings, "secret_key") == "CLIPLINE_S3_SECRET_KEY"
    assert env_name(SimulatorSettings, "webhook_url") == "CLIPLINE_SIM_WEBHOOK_URL"
    assert env_name(PollerSettings, "webhook_secret") == "CLIPLINE_WEBHOOK_SECRET"
    assert settings_env(settings_from(PollerSettings, {"poll_default_seconds": 1.0})) == {
        "CLIPLINE_POLL_DEFAULT_SECONDS": "1.0"
    }


def test_secrets_are_revealed_into_the_dict_only(clean_env: pytest.MonkeyPatch) -> None:
    s3 = settings_from(S3Settings, {"access_key": "ak", "secret_key": "very-secret"})
    assert "very-secret" not in repr(s3)
    assert "very-secret" not in s3.model_dump_json()
    assert settings_env(s3) == {
        "CLIPLINE_S3_ACCESS_KEY": "ak",
        "CLIPLINE_S3_SECRET_KEY": "very-secret",
    }


def test_none_is_left_out(clean_env: pytest.MonkeyPatch) -> None:
    sim = settings_from(SimulatorSettings, {"port": 1, "api_key": None, "state_dir": None})
    assert settings_env(sim) == {"CLIPLINE_SIM_PORT": "1"}


def test_the_process_environment_is_not_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLIPLINE_S3_BUCKET", "from-the-shell")
    clean_env.setenv("CLIPLINE_S3_REGION", "eu-north-1")
    keys = {"access_key": "ak", "secret_key": "sk"}  # required: no built-in key
    s3 = settings_from(S3Settings, {"endpoint": "127.0.0.1:1", **keys})
    assert (s3.bucket, s3.region) == ("clipline-assets", "us-east-1")
    assert settings_env(s3) == {
        "CLIPLINE_S3_ENDPOINT": "127.0.0.1:1",
        "CLIPLINE_S3_ACCESS_KEY": "ak",
        "CLIPLINE_S3_SECRET_KEY": "sk",
    }
    assert type(s3) is S3Settings


def test_values_are_validated_as_the_class_validates_them(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match=r"^CLIPLINE_S3_PRESIGN_SECONDS: Input should be"):
        settings_from(S3Settings, {"presign_seconds": 0, "access_key": "a", "secret_key": "s"})
    with pytest.raises(SettingsError, match="CLIPLINE_SIM_WEBHOOK_SECRET is required"):
        settings_from(SimulatorSettings, {"webhook_url": "http://127.0.0.1:1/h"})
    with pytest.raises(SettingsError, match=r"^CLIPLINE_WEBHOOK_SECRET: ") as refused:
        settings_from(PollerSettings, {"webhook_secret": "whsec_!!not-base64!!"})
    assert "not-base64" not in str(refused.value)  # a refused secret is never echoed
    with pytest.raises(SettingsError, match="S3Settings has no field"):
        settings_from(S3Settings, {"bukket": "b"})  # extra="ignore" would lose it


def test_one_variable_set_twice_must_agree(clean_env: pytest.MonkeyPatch) -> None:
    a = settings_from(CommonSettings, {"http_port": 1})
    same = settings_from(PollerSettings, {"http_port": 1})
    other = settings_from(IntakeSettings, {"http_port": 2})
    assert settings_env(a, same) == {"CLIPLINE_HTTP_PORT": "1"}
    with pytest.raises(ValueError, match="CLIPLINE_HTTP_PORT is set twice"):
        settings_env(a, other)

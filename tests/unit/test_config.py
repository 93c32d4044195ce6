"""Bad configuration stops a process with one clear line naming the variable."""

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.storage.settings import StorageSettings
from shared.config import CommonSettings, ConfigError, S3Settings, load_settings
from shared.registry import load_registry_or_exit


def test_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_HTTP_PORT", "eighty")
    with pytest.raises(ConfigError, match="CLIPLINE_HTTP_PORT: Input should be a valid integer"):
        load_settings(CommonSettings)


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_S3_ACCESS_KEY", "access")
    monkeypatch.setenv("CLIPLINE_S3_SECRET_KEY", "s3cr3t-value")
    settings = load_settings(S3Settings)
    assert "s3cr3t-value" not in repr(settings)
    assert settings.secret_key.get_secret_value() == "s3cr3t-value"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "CLIPLINE_S3_ACCESS_KEY: Field required; CLIPLINE_S3_SECRET_KEY: Field required"),
        ({"CLIPLINE_S3_ACCESS_KEY": "a"}, "CLIPLINE_S3_SECRET_KEY: Field required"),
        ({"CLIPLINE_S3_ACCESS_KEY": "", "CLIPLINE_S3_SECRET_KEY": "s"}, "CLIPLINE_S3_ACCESS_KEY"),
        ({"CLIPLINE_S3_ACCESS_KEY": "a", "CLIPLINE_S3_SECRET_KEY": ""}, "CLIPLINE_S3_SECRET_KEY"),
    ],
)
def test_s3_key_has_no_default_and_a_missing_one_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name in ("CLIPLINE_S3_ACCESS_KEY", "CLIPLINE_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings(S3Settings)


def test_missing_registry_file_is_a_clear_exit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="configuration error: registry"):
        load_registry_or_exit(tmp_path / "nope.toml")


def test_provider_defaults_to_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPLINE_PROVIDER", raising=False)
    assert load_settings(CommonSettings).provider == "simulator"
    monkeypatch.setenv("CLIPLINE_PROVIDER", "openai")
    assert load_settings(CommonSettings).provider == "openai"


@pytest.mark.parametrize("service", ["intake", "pricing_guard"])
def test_unknown_provider_is_a_clear_exit(service: str) -> None:
    env = {"CLIPLINE_PROVIDER": "sora-cloud", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "configuration error: CLIPLINE_PROVIDER: unknown provider 'sora-cloud'; "
        "known providers: litellm, openai, simulator (registry (built-in))"
    )


@pytest.mark.parametrize("service", ["intake", "pricing_guard", "submitter", "poller", "storage"])
def test_service_exits_cleanly_on_bad_config(service: str) -> None:
    env = {"CLIPLINE_HTTP_PORT": "not-a-port", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "configuration error: CLIPLINE_HTTP_PORT" in out.stderr
    assert "Traceback" not in out.stderr


def test_log_level_is_checked_and_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_LOG_LEVEL", "debug")
    assert load_settings(CommonSettings).log_level == "DEBUG"
    monkeypatch.setenv("CLIPLINE_LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError, match="CLIPLINE_LOG_LEVEL"):
        load_settings(CommonSettings)


def test_storage_rejects_an_endpoint_url_with_a_path() -> None:
    env = {
        "CLIPLINE_S3_ENDPOINT": "http://minio:9000/bucket",
        "CLIPLINE_S3_ACCESS_KEY": "k",
        "CLIPLINE_S3_SECRET_KEY": "s",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "services.storage"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert "configuration error: CLIPLINE_S3_ENDPOINT" in out.stderr


def test_storage_without_an_s3_key_exits_with_one_clear_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.storage"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "configuration error: CLIPLINE_S3_ACCESS_KEY: Field required; "
        "CLIPLINE_S3_SECRET_KEY: Field required"
    )


def test_concurrent_stores_is_read_and_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPLINE_CONCURRENT_STORES", raising=False)
    assert load_settings(StorageSettings).concurrent_stores == 4
    monkeypatch.setenv("CLIPLINE_CONCURRENT_STORES", "2")
    assert load_settings(StorageSettings).concurrent_stores == 2
    monkeypatch.setenv("CLIPLINE_CONCURRENT_STORES", "0")
    with pytest.raises(ConfigError, match="CLIPLINE_CONCURRENT_STORES: Input should be greater"):
        load_settings(StorageSettings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://s3.example.com/", "https://s3.example.com"),
        ("", None),
    ],
)
def test_s3_public_url_is_an_origin(value: str, expected: str | None) -> None:
    s3 = S3Settings(access_key="a", secret_key="s", public_url=value)
    assert s3.public_url == expected


@pytest.mark.parametrize(
    "value", ["minio:9000", "ftp://h", "http://h/bucket", "http://u:p@h", "http://h?x=1"]
)
def test_s3_public_url_refuses_what_would_sign_for_the_wrong_place(value: str) -> None:
    with pytest.raises(ValidationError):
        S3Settings(access_key="a", secret_key="s", public_url=value)

"""clipline/observe.py: the scrape configuration, the processes' tracing settings, where a
trace's page is (Phoenix's, or CLIPLINE_TRACE_URL's), and finding Phoenix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipline import observe
from clipline.jobs_cli import trace_link
from clipline.remote import Target
from clipline.servers import ServerError
from clipline.stack import ProcInfo, StackState

TRACE = "33445ef71d4d3206fa51f12a359d040f"


def proc(name: str, metrics_port: int | None) -> ProcInfo:
    return ProcInfo(name=name, pid=1, port=None, log="x", metrics_port=metrics_port)


def test_every_process_with_a_metrics_port_is_a_target_labelled_with_its_name() -> None:
    procs = [proc("nats", None), proc("intake", 40001), proc("storage-2", 40002)]
    config = json.loads(observe.scrape_config(observe.targets_of(procs)))
    [job] = config["scrape_configs"]
    assert job["job_name"] == "clipline"
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:40001"], "labels": {"process": "intake"}},
        {"targets": ["127.0.0.1:40002"], "labels": {"process": "storage-2"}},
    ]
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == [str(observe.RULES_FILE)]


def test_without_the_rules_file_the_configuration_has_no_rules(tmp_path: Path) -> None:
    config = json.loads(observe.scrape_config([], rules=tmp_path / "missing.yml"))
    assert "rule_files" not in config


def test_the_processes_export_their_spans_to_phoenix_over_http() -> None:
    env = observe.tracing_env("http://127.0.0.1:6006")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:6006"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def state_with(home: Path, phoenix: str) -> None:
    StackState(
        home=str(home), nats_url="", s3_endpoint="", s3_access_key="", s3_secret_key="",
        bucket="", simulator_url="", intake_url="", phoenix_url=phoenix,
    ).save()  # fmt: skip


def test_the_trace_link_is_the_local_stacks_phoenix_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(observe.TRACE_URL_ENV, raising=False)
    state_with(tmp_path, "http://127.0.0.1:6006")
    local = Target("http://127.0.0.1:1", "k", "local", local=tmp_path)
    assert trace_link(TRACE, local) == f"http://127.0.0.1:6006/redirects/traces/{TRACE}"
    state_with(tmp_path, "")  # a stack started without --observe, or without Phoenix
    assert trace_link(TRACE, local) is None
    assert trace_link(TRACE, Target("https://clipline.example", "k", "--url")) is None


def test_clipline_trace_url_names_the_page_of_any_trace_ui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(observe.TRACE_URL_ENV, "https://jaeger.example/trace/{trace_id}")
    state_with(tmp_path, "http://127.0.0.1:6006")
    for where in (Target("https://c.example", "k", "--url"), Target("u", "k", "l", tmp_path)):
        assert trace_link(TRACE, where) == f"https://jaeger.example/trace/{TRACE}"


def test_phoenix_is_found_where_clipline_phoenix_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = tmp_path / "arize-phoenix"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    monkeypatch.setenv(observe.PHOENIX_ENV, str(server))
    assert observe.phoenix_binary() == str(server)
    server.chmod(0o644)
    with pytest.raises(ServerError, match="not an executable"):
        observe.phoenix_binary()


def test_without_phoenix_the_message_says_how_to_install_it() -> None:
    assert "make observe" in observe.describe_missing_phoenix({})

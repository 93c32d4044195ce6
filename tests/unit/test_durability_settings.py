"""The durability setting each deployment carries is the one docs/reliability.md names for it:
compose's deploy/nats.conf, the NATS chart's values, the embedded stack's default; and compose's
file really makes nats-server fsync every write (its /varz says so)."""

import re
from pathlib import Path

import httpx
import pytest
import yaml

from bench.durability import runs_setting
from clipline.auth import AuthDir
from clipline.servers import (
    LOOPBACK,
    binary,
    free_port,
    http_ok,
    spawn,
    stop_pid,
    sync_interval,
    wait_until,
)
from clipline.stack import StackOptions

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
NATS_CONF = ROOT / "deploy" / "nats.conf"
NATS_VALUES = ROOT / "deploy" / "k8s" / "nats-values.yaml"
DEFAULT = "default (2 min)"  # how the table names the server's own default


def documented(doc: Path = DOC) -> dict[str, str]:
    """docs/reliability.md's table of each deployment's `sync_interval`: the first column's
    deployment (its first word, lowercased) -> the second column without backticks."""
    text = doc.read_text()
    header = text.index("| Deployment | `sync_interval` |")
    rows = {}
    for line in text[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].split()[0].lower()] = cells[1].strip("`")
    return rows


def conf_sync_interval(text: str) -> str:
    """The one `sync_interval` of a nats-server config file (comments skipped)."""
    found = re.findall(r"^\s*sync_interval\s*:\s*\"?([^\s\"]+)\"?", text, re.MULTILINE)
    assert len(found) == 1, found
    return str(found[0])


def as_documented(value: str | None) -> str:
    return DEFAULT if value is None else value


def test_the_doc_names_every_deployment() -> None:
    assert set(documented()) == {"embedded", "compose", "kubernetes"}


def test_compose_carries_the_documented_setting() -> None:
    value = conf_sync_interval(NATS_CONF.read_text())
    assert sync_interval(value) == value  # a value the stack's own check accepts as it is
    assert documented()["compose"] == value


def test_kubernetes_carries_the_documented_setting() -> None:
    values = yaml.safe_load(NATS_VALUES.read_text())
    # the chart renders config.jetstream.merge into nats.conf's jetstream block
    value = values["config"]["jetstream"]["merge"]["sync_interval"]
    assert documented()["kubernetes"] == value
    assert sync_interval(value) == value


def test_the_embedded_stacks_default_is_the_documented_one() -> None:
    assert documented()["embedded"] == as_documented(StackOptions().nats_sync)


@pytest.mark.parametrize("path", [NATS_CONF, NATS_VALUES])
def test_each_setting_says_where_it_is_explained(path: Path) -> None:
    text = path.read_text()
    at = text.index("sync_interval")
    assert "docs/reliability.md" in text[max(0, at - 600) : at]  # the comment above it


def test_the_doc_shows_the_command_behind_its_figures() -> None:
    text = DOC.read_text()
    assert "python -m bench.durability" in text
    assert "bench.durability" in (ROOT / "Makefile").read_text()


def test_the_table_parser_sees_a_changed_row(tmp_path: Path) -> None:
    """The agreement tests can fail: a doc naming another value is read as that value."""
    row = "| Compose (deploy/nats.conf) | `always` |"
    assert row in DOC.read_text()
    changed = tmp_path / "reliability.md"
    changed.write_text(DOC.read_text().replace(row, row.replace("always", "10s")))
    assert documented(changed)["compose"] == "10s"
    assert documented(changed)["compose"] != conf_sync_interval(NATS_CONF.read_text())


def test_composes_nats_conf_makes_the_server_run_the_documented_setting(tmp_path: Path) -> None:
    """deploy/nats.conf as compose mounts it (its auth include beside it), with compose's flags:
    the server's /varz reports the documented setting (`always`: sync_always)."""
    AuthDir(tmp_path / "auth").init()
    conf = tmp_path / "clipline.conf"
    conf.write_text(NATS_CONF.read_text())
    port, monitor = free_port(), free_port()
    argv = [
        binary("nats-server"), "-c", str(conf), "-js", "-sd", str(tmp_path / "data"),
        "-a", LOOPBACK, "-p", str(port), "-m", str(monitor),
    ]  # fmt: skip
    proc = spawn("nats", argv, tmp_path / "nats.log")
    try:
        wait_until(http_ok(f"http://{LOOPBACK}:{monitor}/healthz"), "nats-server", 30, proc)
        config = httpx.get(f"http://{LOOPBACK}:{monitor}/varz").json()["jetstream"]["config"]
    finally:
        stop_pid(proc.pid)
    assert runs_setting(config, documented()["compose"])

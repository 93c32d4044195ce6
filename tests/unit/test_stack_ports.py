"""`clipline up` keeps the ports of the stack home's previous run where they are free (an
exported CLIPLINE_URL keeps working), and names each one it could not keep."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipline import ports
from clipline.servers import LOOPBACK, free_port
from clipline.stack import SERVICES

NAMES = ["simulator", *SERVICES]


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind((LOOPBACK, free_port()))
        s.listen()
        yield s


def test_free_previous_ports_are_kept_and_remembered_across_a_down(tmp_path: Path) -> None:
    first = ports.choose(NAMES, ports.previous(tmp_path), set())
    assert first.moved == {}
    assert len(set(first.ports.values())) == len(NAMES)
    ports.remember(tmp_path, first.ports)
    assert (tmp_path / ports.PORTS_FILE).stat().st_mode & 0o777 == 0o600

    again = ports.choose(NAMES, ports.previous(tmp_path), set())
    assert (again.ports, again.moved) == (first.ports, {})


def test_a_taken_port_gets_a_new_one_and_is_named(tmp_path: Path, listening: socket.socket) -> None:
    busy = int(listening.getsockname()[1])
    before = ports.choose(NAMES, {}, set()).ports | {"intake": busy}
    chosen = ports.choose(NAMES, before, set())
    assert chosen.moved == {"intake": busy}
    assert chosen.ports["intake"] != busy
    assert {n: p for n, p in chosen.ports.items() if n != "intake"} == {
        n: p for n, p in before.items() if n != "intake"
    }
    assert len(set(chosen.ports.values())) == len(NAMES)


def test_a_port_recorded_twice_or_out_of_range_is_kept_once_at_most(tmp_path: Path) -> None:
    port = free_port()
    chosen = ports.choose(["intake", "poller", "storage"], {"intake": port, "poller": port,
                                                            "storage": 70000}, set())  # fmt: skip
    assert chosen.ports["intake"] == port
    assert chosen.ports["poller"] not in (port, port + 10000)
    assert chosen.moved == {"poller": port, "storage": 70000}


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"intake": "8080", "x": true}'])
def test_an_unreadable_ports_file_is_no_previous_run(tmp_path: Path, text: str) -> None:
    (tmp_path / ports.PORTS_FILE).write_text(text)
    assert ports.previous(tmp_path) == {}
    assert ports.previous(tmp_path / "nowhere") == {}


def test_a_port_whose_server_just_stopped_is_kept_despite_time_wait() -> None:
    """After `clipline down`, a stopped service's port still has connections in TIME_WAIT (it
    closed them first); its server binds with SO_REUSEADDR, so the port is free for it."""
    port = free_port()
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((LOOPBACK, port))
        server.listen()
        client = socket.create_connection((LOOPBACK, port))
        accepted, _ = server.accept()
        accepted.close()  # the server's side closes first: its port's connection in TIME_WAIT
        client.close()
    chosen = ports.choose(["intake"], {"intake": port}, set())
    assert (chosen.ports, chosen.moved) == ({"intake": port}, {})

"""A cluster's route port (`clipline up --nats-cluster`) takes no stranger: it listens on
loopback only, and a nats-server offering itself as a route without the cluster's route secret
is refused (the node logs the authentication error) and never joins."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clipline.servers import NatsServer, Routes, free_port, start_nats, start_nats_cluster, stop_pid


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    nodes = start_nats_cluster(2, tmp_path / "data", tmp_path / "logs")
    try:
        yield nodes
    finally:
        for node in nodes:
            stop_pid(node.proc.pid)


def _monitor(node: NatsServer, path: str) -> dict[str, object]:
    answer = httpx.get(f"http://127.0.0.1:{node.monitor_port}/{path}", timeout=5).json()
    assert isinstance(answer, dict)
    return answer


def _route_names(node: NatsServer) -> set[str]:
    routes = _monitor(node, "routez")["routes"]
    assert isinstance(routes, list)
    return {str(r.get("remote_name")) for r in routes}


@pytest.mark.parametrize("password", ["", "not-the-secret"])
def test_a_server_without_the_route_secret_is_refused_and_never_joins(
    cluster: list[NatsServer], tmp_path: Path, password: str
) -> None:
    victim = cluster[0]
    varz = _monitor(victim, "varz")["cluster"]
    assert isinstance(varz, dict)
    assert varz["addr"] == "127.0.0.1"  # the route port is on loopback only
    peers_before = _route_names(victim)
    assert peers_before == {"nats-2"}
    own = free_port()
    routes = Routes("clipline", [own, int(varz["cluster_port"])], password=password)
    stranger = start_nats(
        tmp_path / "data" / "stranger", tmp_path / "logs", name="stranger",
        route=(routes, own), wait=False,
    )  # fmt: skip
    log = Path(victim.proc.log_file or victim.proc.log_path)
    try:
        deadline = time.monotonic() + 20
        while "authentication error" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the node never refused the stranger's route"
            time.sleep(0.1)  # polling the node's log for the refusal, with a deadline
        assert _route_names(victim) == peers_before
        assert "stranger" not in _route_names(cluster[1])
    finally:
        stop_pid(stranger.proc.pid)

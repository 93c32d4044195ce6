"""NATS cluster and durability settings: server lists, sync intervals, node counts, routes."""

from __future__ import annotations

import pytest

from clipline.cli import parser
from clipline.servers import LOOPBACK, Routes, ServerError, sync_interval
from clipline.stack import StackOptions, StackState, _is_nats_node
from shared.config import nats_servers
from shared.streams import MAX_REPLICAS, ensure_jetstream


def test_a_nats_url_names_one_server_or_a_cluster_separated_by_commas() -> None:
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers(" nats://a:1, nats://b:2 ,nats://c:3,") == [
        "nats://a:1",
        "nats://b:2",
        "nats://c:3",
    ]
    with pytest.raises(ValueError, match="no NATS server"):
        nats_servers(" , ")


@pytest.mark.parametrize(
    ("given", "kept"),
    [(None, None), ("", None), ("default", None), ("always", "always"), ("ALWAYS", "always"),
     ("10s", "10s"), ("500ms", "500ms"), ("2m", "2m"), ("1h", "1h")],
)  # fmt: skip
def test_sync_interval_takes_always_default_or_a_duration(given: str | None, kept: str) -> None:
    assert sync_interval(given) == kept


@pytest.mark.parametrize("given", ["sometimes", "10", "0s", "-1s", "10 s", "1d", "s"])
def test_a_sync_interval_nats_server_would_refuse_is_refused_with_the_choices(given: str) -> None:
    with pytest.raises(ServerError, match=r"always.*default.*duration"):
        sync_interval(given)


def test_up_takes_the_cluster_size_and_sync_interval_and_refuses_nonsense(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parser().parse_args(["up", "--nats-cluster", "3", "--nats-sync", "always"])
    assert (args.nats_cluster, args.nats_sync) == (3, "always")
    assert parser().parse_args(["up"]).nats_cluster == 1
    for bad in (["--nats-cluster", "0"], ["--nats-cluster", "x"], ["--nats-sync", "often"]):
        with pytest.raises(SystemExit) as exit_:
            parser().parse_args(["up", *bad])
        assert exit_.value.code == 3
    assert "often" in capsys.readouterr().err


def test_the_sync_interval_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLIPLINE_NATS_SYNC_INTERVAL", "always")
    assert parser().parse_args(["up"]).nats_sync == "always"
    assert parser().parse_args(["up", "--nats-sync", "default"]).nats_sync is None


def test_stack_options_default_to_one_server_and_the_servers_sync() -> None:
    options = StackOptions()
    assert (options.nats_cluster, options.nats_sync) == (1, None)


def test_nats_nodes_are_nats_or_a_clusters_numbered_nodes_and_nothing_else() -> None:
    assert [n for n in ("nats", "nats-1", "nats-12", "natsy", "nats-x") if _is_nats_node(n)] == [
        "nats-1",
        "nats-12",
    ]
    state = StackState("/h", "", "", "", "", "", "", "")
    assert state.nats_nodes() == []


def test_a_nodes_routes_name_the_others_with_the_route_secret_and_never_itself() -> None:
    routes = Routes("clipline", [7001, 7002, 7003], password="s3cret")
    block = routes.block(7002)
    assert f'listen: "{LOOPBACK}:7002"' in block
    assert f"nats-route://route:s3cret@{LOOPBACK}:7001" in block
    assert f"nats-route://route:s3cret@{LOOPBACK}:7003" in block
    assert f"@{LOOPBACK}:7002" not in block
    assert 'authorization { user: "route", password: "s3cret" }' in block
    assert "s3cret" not in repr(routes)


@pytest.mark.parametrize("replicas", [0, MAX_REPLICAS + 1])
async def test_provisioning_refuses_a_replica_count_jetstream_cannot_keep(replicas: int) -> None:
    with pytest.raises(ValueError, match="replicas must be 1 to 5"):
        await ensure_jetstream(None, replicas)  # type: ignore[arg-type]  # refused before use

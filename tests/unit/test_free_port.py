"""Ports chosen for one stack: distinct, and none another's gRPC offset (port + 10000), which
SeaweedFS refuses ("reserved for gRPC calculation")."""

from __future__ import annotations

from clipline.servers import free_port


def test_ports_chosen_together_are_distinct_and_never_ten_thousand_apart() -> None:
    used: set[int] = set()
    chosen = [free_port(used) for _ in range(40)]
    assert len(set(chosen)) == len(chosen)
    assert all(p < 55000 for p in chosen)
    assert not [(a, b) for a in chosen for b in chosen if b - a == 10000]
    assert {p + 10000 for p in chosen} <= used  # later picks avoid the offsets too

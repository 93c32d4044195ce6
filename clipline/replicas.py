"""Replicas of a service in the embedded stack: their names, and what scaling to n changes."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from clipline.servers import ServerError

SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
NOT_SCALABLE = ("nats", "s3", "seaweedfs", "simulator")


def replica_name(service: str, index: int) -> str:
    """The first replica keeps the service's name; the k-th (k >= 2) is `<service>-<k>`."""
    if index < 1:
        raise ValueError(f"replica numbers start at 1, not {index}")
    return service if index == 1 else f"{service}-{index}"


def parse_replica(name: str, services: Collection[str] = SERVICES) -> tuple[str, int] | None:
    """(service, k) of a replica's name, or None when `name` is no service's replica.

    Exactly the names `replica_name` makes: `pricing_guard-1` and `pricing_guard-02` are not
    replicas (the first has no suffix, numbers have no leading zero)."""
    if name in services:
        return name, 1
    service, dash, number = name.rpartition("-")
    if not (dash and service in services and number.isascii() and number.isdigit()):
        return None
    if number.startswith("0") or int(number) < 2:
        return None
    return service, int(number)


def scalable(name: str) -> str:
    """`name` when it is a service `clipline scale` can run several of; ServerError saying
    why not otherwise."""
    if name in SERVICES:
        return name
    one_of = ", ".join(SERVICES)
    if name in NOT_SCALABLE:
        raise ServerError(f"{name} is not scalable (the stack runs one); a service is: {one_of}")
    replica = parse_replica(name)
    if replica is not None:
        raise ServerError(f"{name} is a replica: scale its service, {replica[0]}")
    raise ServerError(f"no service named {name!r}: one of {one_of}")


@dataclass(frozen=True, slots=True)
class Plan:
    """What scaling changes: replica numbers to start (lowest first) and to stop (highest
    first)."""

    start: tuple[int, ...]
    stop: tuple[int, ...]


def plan(running: Collection[int], n: int) -> Plan:
    """From the recorded replica numbers to replicas 1..n: the missing ones start, the ones
    above n stop, highest first."""
    if n < 1:
        raise ValueError(f"a service runs at least 1 replica, not {n}")
    have = set(running)
    return Plan(
        start=tuple(k for k in range(1, n + 1) if k not in have),
        stop=tuple(sorted((k for k in have if k > n), reverse=True)),
    )

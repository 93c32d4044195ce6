"""Replica names, scaling plans and `clipline scale`'s argument errors: no processes."""

from __future__ import annotations

import pytest

from clipline.cli import describe, parser
from clipline.replicas import SERVICES, Plan, parse_replica, plan, replica_name, scalable
from clipline.servers import ServerError
from clipline.stack import ProcInfo, Scaled


def test_the_first_replica_keeps_the_service_name() -> None:
    assert replica_name("pricing_guard", 1) == "pricing_guard"
    assert replica_name("pricing_guard", 2) == "pricing_guard-2"
    assert replica_name("storage", 12) == "storage-12"
    with pytest.raises(ValueError, match="start at 1"):
        replica_name("storage", 0)


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("k", [1, 2, 3, 10, 123])
def test_names_parse_back(service: str, k: int) -> None:
    assert parse_replica(replica_name(service, k)) == (service, k)


@pytest.mark.parametrize(
    "name",
    [
        "pricing_guard-1",  # the first has no suffix
        "pricing_guard-0",
        "pricing_guard-02",
        "pricing_guard-",
        "pricing_guard-x",
        "pricing_guard-²",  # a digit to str.isdigit, not to us
        "pricing_guard2",
        "pricing-guard-2",
        "simulator",
        "simulator-2",
        "nats",
        "seaweedfs",
        "",
    ],
)
def test_other_names_are_no_replica(name: str) -> None:
    assert parse_replica(name) is None


def test_plan_starts_the_missing_and_stops_the_highest_first() -> None:
    assert plan([1], 3) == Plan(start=(2, 3), stop=())
    assert plan([1, 2, 3, 4], 2) == Plan(start=(), stop=(4, 3))
    assert plan([1, 2], 2) == Plan(start=(), stop=())
    assert plan([1, 3], 2) == Plan(start=(2,), stop=(3,))  # always 1..n, whatever was recorded
    with pytest.raises(ValueError, match="at least 1"):
        plan([1], 0)


def test_only_services_are_scalable() -> None:
    assert scalable("poller") == "poller"
    for name in ("nats", "s3", "seaweedfs", "simulator"):
        with pytest.raises(ServerError, match=f"^{name} is not scalable"):
            scalable(name)
    with pytest.raises(ServerError, match="pricing_guard-2 is a replica: scale its service"):
        scalable("pricing_guard-2")
    with pytest.raises(ServerError, match="no service named 'pricer': one of intake, "):
        scalable("pricer")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulator", "2"], "argument service: simulator is not scalable (the stack runs one)"),
        (["s3", "2"], "argument service: s3 is not scalable"),
        (["nats", "2"], "argument service: nats is not scalable"),
        (["storage-2", "2"], "argument service: storage-2 is a replica: scale its service"),
        (["nope", "2"], "argument service: no service named 'nope'"),
        (["storage", "0"], "argument n: a service runs at least 1 replica, not 0"),
        (["storage", "-1"], "argument n: a service runs at least 1 replica, not -1"),
        (["storage", "two"], "argument n: 'two' is not a number of replicas"),
        (["storage"], "the following arguments are required: n"),
    ],
)
def test_scale_argument_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["scale", *argv])
    assert exited.value.code == 3  # usage (docs/cli.md)
    err = capsys.readouterr().err
    assert message in err, err


def test_scale_arguments() -> None:
    args = parser().parse_args(["scale", "pricing_guard", "3"])
    assert (args.service, args.n) == ("pricing_guard", 3)


def _proc(name: str, pid: int, port: int) -> ProcInfo:
    return ProcInfo(name=name, pid=pid, port=port, log=f"logs/{name}.log")


def test_describe_says_what_changed() -> None:
    up = Scaled(
        "pricing_guard",
        3,
        [_proc("pricing_guard-2", 11, 4001), _proc("pricing_guard-3", 12, 4002)],
        [],
    )
    assert describe(up) == (
        "pricing_guard: 3 replicas (started pricing_guard-2 on 127.0.0.1:4001, "
        "started pricing_guard-3 on 127.0.0.1:4002)"
    )
    down = Scaled("storage", 1, [], [_proc("storage-2", 42, 4003)])
    assert describe(down) == "storage: 1 replica (stopped storage-2 (pid 42))"
    assert describe(Scaled("poller", 2, [], [])) == "poller: 2 replicas (unchanged)"

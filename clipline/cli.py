"""The `clipline` command: up | down | status | restart | scale | logs (the embedded stack);
submit | jobs | events | timeline | cancel | download (a tenant's jobs, local or remote);
budget | spend | keys | auth (operators)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

import httpx
import nats.errors

from clipline import auth_cli, budget_cli, jobs_cli, keys_cli, observe, timeline_cli, webhooks_cli
from clipline.logs import Follower, last_lines
from clipline.remote import OK, REFUSED, UNREACHABLE, USAGE, CliError
from clipline.replicas import parse_replica, scalable
from clipline.servers import SYNC_INTERVAL_ENV, ServerError, sync_interval
from clipline.stack import (
    ALIASES,
    Scaled,
    StackOptions,
    StackState,
    default_home,
    down,
    health_check,
    restart,
    scale,
    up,
)

EXIT_CODES = """exit codes: 0 ok; 1 refused (a 4xx) or the job failed, was cancelled or timed out;
2 clipline cannot be reached (connection, DNS, timeout, 5xx after retries); 3 usage (bad
arguments, a missing local file, no URL or API key, a key not accepted). docs/cli.md has more."""


def _status(args: argparse.Namespace) -> int:
    state = StackState.load(args.home)
    if state is None:
        print(f"no stack under {args.home}")
        return 1
    alive = {p.pid for p in state.alive()}
    healthy = 0
    width = max(14, *(len(p.name) + 1 for p in state.processes))
    for p in state.processes:
        where = f"127.0.0.1:{p.port}" if p.port else "-"
        ok = p.pid in alive and health_check(p)()
        healthy += ok
        print(f"{p.name:<{width}} pid {p.pid:<8} {'up' if ok else 'DOWN':<5} {where}")
    print(f"nats: {state.nats_url}  s3: {state.s3_endpoint}  intake: {state.intake_url}")
    scraped = [p for p in state.processes if p.metrics_url]
    if scraped:
        print("metrics (Prometheus text, on loopback):")
        for p in scraped:
            print(f"  {p.name:<{width}} {p.metrics_url}")
    if state.prometheus_url:
        print(f"prometheus: {state.prometheus_url}  (alerts: {state.prometheus_url}/alerts)")
    if state.phoenix_url:
        print(f"phoenix (traces): {state.phoenix_url}")
    return 0 if healthy == len(state.processes) else 1


def _up(args: argparse.Namespace) -> int:
    before = StackState.load(args.home)
    pids = {p.name: p.pid for p in before.alive()} if before else {}
    if args.observe and observe.phoenix_binary() is None:
        print(f"{observe.describe_missing_phoenix(os.environ)}; observing with Prometheus alone",
              file=sys.stderr)  # fmt: skip
    options = StackOptions(
        generation_seconds=args.generation_seconds, observe=args.observe,
        nats_cluster=args.nats_cluster, nats_sync=args.nats_sync,
    )  # fmt: skip
    state = up(args.home, options)
    started = [p.name for p in state.processes if pids.get(p.name) != p.pid]
    if not pids:
        print(f"clipline stack is up under {state.home}")
        for name, port in sorted(state.moved_ports.items()):
            now = state.find(name).port
            print(
                f"note: {name}'s port of the previous run ({port}) was taken: it is {now} now"
                + (f" (export CLIPLINE_URL={state.intake_url})" if name == "intake" else "")
            )
    elif started:
        print(f"started again: {', '.join(started)}; the rest kept running")
    else:
        print("everything was already running")
    return _status(args)


def _restart(args: argparse.Namespace) -> int:
    proc = restart(args.home, args.name)
    where = f" on 127.0.0.1:{proc.port}" if proc.port else ""
    print(f"{proc.name} restarted: pid {proc.pid}{where}, healthy")
    return 0


def _scale(args: argparse.Namespace) -> int:
    print(describe(scale(args.home, args.service, args.n)))
    return 0


def describe(change: Scaled) -> str:
    """One line: e.g. `pricing_guard: 2 replicas (started pricing_guard-2 on 127.0.0.1:PORT)`."""
    what = [f"started {p.name} on 127.0.0.1:{p.port}" for p in change.started]
    what += [f"stopped {p.name} (pid {p.pid})" for p in change.stopped]
    count = f"{change.replicas} replica{'' if change.replicas == 1 else 's'}"
    return f"{change.service}: {count} ({', '.join(what) or 'unchanged'})"


def _service_arg(name: str) -> str:
    try:
        return scalable(name)
    except ServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of replicas") from None
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"a service runs at least 1 replica, not {n} (`clipline down` stops the stack)"
        )
    return n


def _logs(args: argparse.Namespace) -> int:
    files = _log_files(args.home, args.name)
    written = [f for f in files if f.exists() and f.stat().st_size > 0]
    # Like tail: a header per file only when more than one has something to show.
    headers = len(written) > 1
    for path in written:
        if headers:
            print(f"==> {path} <==")
        for line in last_lines(path, args.lines):
            print(line)
    if not written:
        print(f"(nothing logged yet: {files[0]})", file=sys.stderr)
    if args.follow:
        _follow_logs(files, written[-1] if written else None, headers)
    return 0


def _log_files(home: Path, name: str) -> list[Path]:
    """A recorded process's log files; else (the stack is down, or a replica was scaled away)
    the ones still on disk, where `up` put them."""
    state = StackState.load(home)
    wanted = ALIASES.get(name, name)
    for proc in state.processes if state else []:
        if proc.name == wanted:
            return proc.log_files()
    logs = home / "logs"
    files: list[Path] = []
    if wanted in ("nats", "seaweedfs", "simulator") or parse_replica(wanted):  # no glob pattern
        files = sorted(logs.glob(f"{wanted}.*[!0-9]")) + sorted(logs.glob(f"{wanted}/*.INFO"))
    if files:
        return files
    if state is not None:
        state.find(name)  # raises, naming the processes there are
    raise ServerError(f"no logs of {name!r} under {logs}")


def _follow_logs(files: list[Path], current: Path | None, headers: bool) -> None:
    """Print what the files get until Ctrl-C, naming the file whenever the output switches."""
    followers = [Follower(f) for f in files]
    try:
        while True:
            for follower in followers:
                lines = follower.read_new()
                if not lines:
                    continue
                if follower.path != current and (headers or current is not None):
                    print(f"==> {follower.path} <==")
                    headers = True
                current = follower.path
                print("\n".join(lines), flush=True)
            time.sleep(0.25)  # polling interval of a terminal command, as `tail -F` does
    except KeyboardInterrupt:
        pass
    finally:
        for follower in followers:
            follower.close()


def _down(args: argparse.Namespace) -> int:
    survivors = down(args.home)
    if survivors:
        print("still running: " + ", ".join(f"{p.name}({p.pid})" for p in survivors))
        return 1
    print("clipline stack is down")
    return 0


def _nodes_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 5:
        raise argparse.ArgumentTypeError(f"{text!r}: 1 (one server) to 5 nodes")
    return n


def _sync_arg(text: str) -> str | None:
    try:
        return sync_interval(text)
    except ServerError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="clipline", description=__doc__, epilog=EXIT_CODES,
               formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--home", type=Path, default=None, help="stack folder (default ./.clipline)")
    jobs_cli.add_global_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the embedded stack, or what of it is not running")
    u.add_argument(
        "--generation-seconds", type=float, default=4.0, help="simulated render time (new stack)"
    )
    u.add_argument(
        "--observe", action="store_true",
        help="also start Prometheus (metrics, alerts) and Arize Phoenix (traces; `make observe`)",
    )  # fmt: skip
    u.add_argument(
        "--nats-cluster", type=_nodes_arg, default=1, metavar="N",
        help="run NATS as a cluster of N nodes on loopback (nats-1..nats-N), every stream and "
        "bucket at 3 replicas (new stack; default 1: one server)",
    )  # fmt: skip
    u.add_argument(
        "--nats-sync", type=_sync_arg, default=os.environ.get(SYNC_INTERVAL_ENV),
        metavar="INTERVAL",
        help="nats-server's sync_interval: `always` (fsync every write), a duration (10s) or "
        f"`default` (2m); default ${SYNC_INTERVAL_ENV} or the server's (docs/reliability.md)",
    )  # fmt: skip
    u.set_defaults(func=_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=_down)
    sub.add_parser("status", help="show the stack's processes").set_defaults(func=_status)
    names = "nats (a cluster's nats-2), s3, simulator, a service or a replica (pricing_guard-2)"
    r = sub.add_parser("restart", help="restart one process of the stack")
    r.add_argument("name", help=names)
    r.set_defaults(func=_restart)
    sc = sub.add_parser("scale", help="run n replicas of a service (<service>, <service>-2, ...)")
    sc.add_argument("service", type=_service_arg, help="intake, pricing_guard, submitter, ...")
    sc.add_argument("n", type=_count_arg, help="how many replicas (1 or more)")
    sc.set_defaults(func=_scale)
    lg = sub.add_parser("logs", help="show one process's log")
    lg.add_argument("name", help=names)
    lg.add_argument("-n", "--lines", type=int, default=50, help="how many last lines (50)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until Ctrl-C")
    lg.set_defaults(func=_logs)
    jobs_cli.add_commands(sub)
    timeline_cli.add_commands(sub)
    budget_cli.add_commands(sub)
    keys_cli.add_commands(sub)
    auth_cli.add_commands(sub)
    webhooks_cli.add_commands(sub)
    return p


class Parser(argparse.ArgumentParser):
    """argparse, with the CLI's usage exit code (3) for bad arguments."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.home = (args.home or default_home()).resolve()
    try:
        jobs_cli.apply_global_options(args)
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nothing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UNREACHABLE
    except auth_cli.ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return REFUSED
    except (httpx.HTTPError, nats.errors.Error) as exc:
        print(f"error: cannot reach the stack ({type(exc).__name__}: {exc})", file=sys.stderr)
        return UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())

"""The `clipline` command: up | down | status | restart | scale | logs | submit | cancel |
download | budget | spend | keys."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import urllib3
from minio.error import S3Error
from pydantic import ValidationError

from clipline import auth_cli, budget_cli, keys_cli, webhooks_cli
from clipline.download import (
    VARIANTS,
    AssetGone,
    DownloadMismatch,
    UnsafeRecord,
    fetch,
    s3_client,
    targets,
    wanted,
)
from clipline.logs import Follower, last_lines
from clipline.replicas import parse_replica, scalable
from clipline.servers import ServerError
from clipline.stack import (
    ALIASES,
    Scaled,
    StackOptions,
    StackState,
    default_home,
    down,
    health_check,
    require,
    restart,
    scale,
    up,
)
from clipline.verify import VerificationError, verify_video
from shared.contracts import TERMINAL_KINDS, Event, JobRecordV1
from shared.contracts.ids import JOB_ID_RE, job_id_for
from shared.contracts.requests import PRIORITIES, request_default


def _dollars(micros: int | None) -> str:
    return "unknown" if micros is None else f"${micros / 1_000_000:.2f} ({micros} micro-dollars)"


def image_data_url(path: Path) -> str:
    """A local JPEG/PNG/WebP file as the data URL intake expects."""
    types = {
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".png": "image/png",
        ".webp": "image/webp",
    }
    mime = types.get(path.suffix.lower())
    if mime is None:
        raise SystemExit(f"--image must be .jpg, .png or .webp: {path}")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


class Progress:
    """A one-line progress bar on a terminal; plain lines otherwise."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = -1
        self.label = ""

    def show(self, percent: int, label: str) -> None:
        percent = max(percent, self.last, 0)  # never draw the bar going backwards
        if percent == self.last and label == self.label:
            return
        self.last, self.label = percent, label
        filled = percent * 30 // 100
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {percent:3d}% {label}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


async def _submit(args: argparse.Namespace) -> int:
    state = require(args.home)
    api_key = keys_cli.intake_key(args.home, args.tenant, args.api_key)
    key = args.idempotency_key or f"cli:{uuid.uuid4().hex}"
    job_id = job_id_for(args.tenant, key)
    body = {"model": args.model, "size": args.size, "seconds": args.seconds, "prompt": args.prompt}
    if args.priority != request_default("priority"):
        body["priority"] = args.priority
    if args.image is not None:
        body["input_reference"] = image_data_url(args.image)
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def on_event(msg: Any) -> None:
        kind = msg.subject.split(".")[2]
        events.put_nowait((kind, json.loads(msg.data)))

    try:
        # Subscribe before submitting, so no event of this job can be missed.
        await nc.subscribe(Event.subject_filter_any(args.tenant, job_id), cb=on_event)
        async with httpx.AsyncClient(
            base_url=state.intake_url, timeout=30, headers=keys_cli.bearer(api_key)
        ) as http:
            response = await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
            if response.status_code not in (200, 202):  # 200: this key's job already exists
                print(f"rejected by intake ({response.status_code}): {response.text}")
                return 2
            if response.json()["tenant"] != args.tenant:  # --api-key: the key's tenant
                args.tenant, job_id = response.json()["tenant"], response.json()["job_id"]
                # events before this are missed; _follow reads the record when it is quiet
                await nc.subscribe(Event.subject_filter_any(args.tenant, job_id), cb=on_event)
            if response.status_code == 200:
                status = response.json().get("status")
                print(f"job {job_id} already exists (tenant {args.tenant}, {status})")
            else:
                print(f"job {job_id} submitted (tenant {args.tenant})")
            if not args.wait:
                return 0
            record = await _follow(events, http, job_id, args.timeout, response.json())
    finally:
        await nc.close()
    if record is None:
        print(f"timed out after {args.timeout:.0f}s; `clipline status` shows the stack")
        return 3
    return _report(record, state, args)


async def _follow(
    events: asyncio.Queue[tuple[str, dict[str, Any]]],
    http: httpx.AsyncClient,
    job_id: str,
    limit_seconds: float,
    answer: dict[str, Any],
) -> JobRecordV1 | None:
    """Wait until the job's record (intake's HTTP API) says it ended; None past the limit.
    Events only wake it and move the progress bar: a terminal event is never believed by
    itself (anyone who can publish could forge one), the record is read and decides."""
    bar = Progress()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_seconds
    if answer.get("status") in TERMINAL_KINDS:  # a resubmit of a job that already ended
        return await _ended_record(http, job_id)
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                kind, data = await asyncio.wait_for(events.get(), timeout=min(left, 5.0))
            except TimeoutError:
                # Quiet for a while: the job may have ended before we subscribed (a resubmit).
                kind, data = "", {}
            if kind in TERMINAL_KINDS or not kind:
                if (record := await _ended_record(http, job_id)) is not None:
                    if record.status == "completed":
                        bar.show(100, "stored")
                    return record
                continue  # the record has not ended (a forged or early event): keep waiting
            percent = {"accepted": 0, "admitted": 0, "submitted": 1, "generated": 99}.get(
                kind, int(data.get("progress", 0))
            )
            bar.show(percent, kind if kind != "progress" else data.get("upstream_status", ""))
    finally:
        bar.done()
    return None


async def _ended_record(http: httpx.AsyncClient, job_id: str) -> JobRecordV1 | None:
    """The job's record when it says the job ended; None when it has not (or cannot be read)."""
    try:
        got = await http.get(f"/v1/jobs/{job_id}")
        record = JobRecordV1.model_validate(got.json()) if got.status_code == 200 else None
    except (httpx.HTTPError, ValueError):  # unreachable for a moment, or not a record
        return None
    return record if record is not None and record.terminal else None


def _report(record: JobRecordV1, state: StackState, args: argparse.Namespace) -> int:
    """What the job's record says about its end (never what an event said)."""
    trace_id = record.trace_id
    if record.status != "completed":
        print(f"job {record.status.value}: {record.reason}: {record.detail}")
        print(f"trace id: {trace_id}")
        return 1
    started, ended = record.history.get("accepted"), record.history.get("completed")
    total = round((ended - started).total_seconds(), 3) if started and ended else None
    print(f"job {record.job_id} completed" + (f" in {total}s" if total is not None else ""))
    for asset in record.assets:
        print(
            f"  {asset.variant:<11} s3://{asset.bucket}/{asset.key} "
            f"({asset.size_bytes} bytes, sha256 {asset.sha256[:16]}...)"
        )
    print(f"cost: {_dollars(record.cost_micros)}")
    print(f"trace id: {trace_id}")
    if args.verify:
        video = next(a for a in record.assets if a.variant == "video")
        try:
            report = verify_video(state, video.bucket, video.key, args.size, args.seconds)
        except VerificationError as exc:
            print(f"verification FAILED: {exc}")
            return 4
        print(f"verified: {report}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    """Ask intake to cancel a job: 0 when it is cancelling or cancelled, 1 when it ended
    otherwise or is unknown (the reason printed), 2 when the stack cannot be reached."""
    state = require(args.home)
    api_key = keys_cli.intake_key(args.home, args.tenant, args.api_key)
    with httpx.Client(base_url=state.intake_url, timeout=30) as http:
        response = http.post(f"/v1/jobs/{args.job_id}/cancel", headers=keys_cli.bearer(api_key))
    try:
        body = response.json()
    except ValueError:  # not intake's JSON (a proxy's page, say)
        body = {"error": {"reason": "unexpected_answer", "detail": response.text[:200]}}
    return report_cancel(args.job_id, args.tenant, response.status_code, body)


def report_cancel(job_id: str, tenant: str, code: int, body: dict[str, Any]) -> int:
    if code in (200, 202):
        status = body.get("status")
        if status == "cancelled":
            print(f"job {job_id} is cancelled: {body.get('detail')}")
        elif code == 202:
            print(f"job {job_id} is cancelling (tenant {tenant})")
        else:
            print(f"job {job_id} was already cancelling (tenant {tenant})")
        return 0
    error = body.get("error") or {}
    print(f"cannot cancel job {job_id} ({code} {error.get('reason')}): {error.get('detail')}")
    return 2 if code >= 500 else 1


def _download(args: argparse.Namespace) -> int:
    """Save a completed job's assets as `DIR/<job_id>-<variant>.<ext>`, each verified against
    the record (size, sha256): 0 when all were saved, 1 when the job is not completed, has no
    such asset, S3 no longer has it (retention) or a file does not match (nothing kept of it),
    2 when the stack cannot answer."""
    if not JOB_ID_RE.fullmatch(args.job_id):
        print(f"{args.job_id!r} is not a job id (job_ followed by 32 hex digits)")
        return 1
    state = require(args.home)
    api_key = keys_cli.intake_key(args.home, args.tenant, args.api_key)
    with httpx.Client(base_url=state.intake_url, timeout=30) as http:
        response = http.get(f"/v1/jobs/{args.job_id}", headers=keys_cli.bearer(api_key))
    if response.status_code == 404:
        print(f"no job {args.job_id} for tenant {args.tenant}")
        return 1
    if response.status_code != 200:
        print(f"cannot read job {args.job_id} ({response.status_code}): {response.text[:200]}")
        return 2
    try:
        record = JobRecordV1.model_validate_json(response.content)
    except ValidationError as exc:
        print(f"job {args.job_id}: refused, nothing written: not a job record ({exc.error_count()} "
              "problems)")  # fmt: skip
        return 1
    if record.job_id != args.job_id:
        print(f"job {args.job_id}: refused, nothing written: the record names another job id")
        return 1
    if record.status != "completed":
        print(f"job {record.job_id} is {record.status.value}, not completed: nothing to download")
        return 1
    assets, missing = wanted(record, args.variant or [])
    if missing:
        print(f"job {record.job_id} has no stored {', '.join(missing)}")
        return 1
    try:
        planned = targets(record, args.job_id, assets, args.output)
    except UnsafeRecord as exc:
        print(f"job {args.job_id}: refused, nothing written: {exc}")
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    client = s3_client(state)
    for asset, target in planned:
        try:
            saved = fetch(client, asset, target)
        except DownloadMismatch as exc:
            print(f"{asset.variant}: does not match the job record, not kept: {exc}")
            return 1
        except AssetGone as exc:
            print(f"{asset.variant}: {exc}")
            return 1
        except (S3Error, urllib3.exceptions.HTTPError) as exc:
            print(f"{asset.variant}: cannot read s3://{asset.bucket}/{asset.key}: {exc}")
            return 2
        print(f"{saved.path} ({saved.size_bytes} bytes, sha256 {saved.sha256[:16]}... verified)")
    return 0


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
    return 0 if healthy == len(state.processes) else 1


def _up(args: argparse.Namespace) -> int:
    before = StackState.load(args.home)
    pids = {p.name: p.pid for p in before.alive()} if before else {}
    state = up(args.home, StackOptions(generation_seconds=args.generation_seconds))
    started = [p.name for p in state.processes if pids.get(p.name) != p.pid]
    if not pids:
        print(f"clipline stack is up under {state.home}")
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


def _add_job_commands(sub: Any) -> None:
    """submit, cancel and download: what a user does with jobs."""
    s = sub.add_parser("submit", help="submit a job through intake's HTTP API")
    s.add_argument("--prompt", required=True)
    model, size, seconds = (request_default(f) for f in ("model", "size", "seconds"))
    s.add_argument("--model", default=model, help=f"(default: {model})")
    s.add_argument("--size", default=size, help=f"WIDTHxHEIGHT (default: {size})")
    s.add_argument("--seconds", type=int, default=seconds, help=f"(default: {seconds})")
    s.add_argument("--tenant", default="default", help="tenant (default: default)")
    keys_cli.add_key_option(s)
    s.add_argument("--priority", choices=PRIORITIES, default=request_default("priority"),
                   help="under the upstream's rate limit, higher goes first")  # fmt: skip
    s.add_argument("--idempotency-key", default=None)
    s.add_argument("--image", type=Path, default=None, help="first frame (must match --size)")
    s.add_argument("--wait", action="store_true", help="follow the job to the end")
    s.add_argument("--verify", action="store_true", help="with --wait: decode the stored MP4")
    s.add_argument("--timeout", type=float, default=600.0)
    s.set_defaults(func=lambda a: asyncio.run(_submit(a)))
    c = sub.add_parser("cancel", help="cancel a job (before submission nothing is spent)")
    c.add_argument("job_id", help="the job id (job_...)")
    c.add_argument("--tenant", default="default", help="tenant (default: default)")
    keys_cli.add_key_option(c)
    c.set_defaults(func=_cancel)
    d = sub.add_parser("download", help="save a completed job's assets, verified by sha256")
    d.add_argument("job_id", help="the job id (job_...)")
    d.add_argument("--tenant", default="default", help="tenant (default: default)")
    keys_cli.add_key_option(d)
    d.add_argument("--variant", action="extend", nargs="+", choices=VARIANTS, default=None,
                   help="video, thumbnail and/or spritesheet (default: all)")  # fmt: skip
    d.add_argument("-o", "--output", type=Path, default=Path(), help="folder (default: .)")
    d.set_defaults(func=_download)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipline", description=__doc__)
    p.add_argument("--home", type=Path, default=None, help="stack folder (default ./.clipline)")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start the embedded stack, or what of it is not running")
    u.add_argument(
        "--generation-seconds", type=float, default=4.0, help="simulated render time (new stack)"
    )
    u.set_defaults(func=_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=_down)
    sub.add_parser("status", help="show the stack's processes").set_defaults(func=_status)
    names = "nats, s3, simulator, a service or a replica (pricing_guard-2)"
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
    _add_job_commands(sub)
    budget_cli.add_commands(sub)
    keys_cli.add_commands(sub)
    auth_cli.add_commands(sub)
    webhooks_cli.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.home = (args.home or default_home()).resolve()
    try:
        return int(args.func(args))
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except auth_cli.ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, nats.errors.Error) as exc:
        print(f"error: cannot reach the stack ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

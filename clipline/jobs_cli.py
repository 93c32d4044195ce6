"""`clipline submit | jobs list | jobs show | events | cancel | download`: a tenant's job commands,
all over intake's HTTP API (never NATS), against a remote clipline or the local stack."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from clipline import downloads, observe, output
from clipline.download import VARIANTS
from clipline.follow import Estimate, Message, Progress, RouteMissing, poll, stream
from clipline.remote import (
    KEY_ENV,
    OK,
    PROFILE_ENV,
    REFUSED,
    UNREACHABLE,
    URL_ENV,
    USAGE,
    Api,
    Choice,
    CliError,
    Target,
    refusal,
    target,
)
from clipline.stack import StackState, require
from clipline.verify import VerificationError, verify_video
from shared.contracts import TERMINAL_KINDS
from shared.contracts.ids import JOB_ID_RE
from shared.contracts.requests import PRIORITIES, request_default
from shared.registry import load_registry
from shared.registry.specs import Generation, RegistryError

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
               ".webp": "image/webp"}  # fmt: skip
LIST_PAGE = 100


def image_data_url(path: Path) -> str:
    """A local JPEG/PNG/WebP file as the data URL intake expects; CliError(USAGE) otherwise."""
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise CliError(USAGE, f"--image must be a .jpg, .png or .webp file: {path}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CliError(USAGE, f"--image: no such file: {path}") from None
    except OSError as exc:
        raise CliError(USAGE, f"--image: cannot read {path}: {exc.strerror or exc}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def choice(args: argparse.Namespace) -> Choice:
    return Choice(url=args.url, api_key=args.api_key, profile=args.profile)


def expected_seconds(model: str, seconds: int, local: bool) -> float:
    """A first guess of the generation time when the server gives none: the registry's for the
    local stack's simulator, else OpenAI's published-ish figures (an estimate, and so labelled)."""
    try:
        provider = load_registry().provider("simulator" if local else "openai")
    except RegistryError:
        return Generation().expected_seconds(seconds)
    spec = provider.model(model)
    generation = spec.generation if spec is not None else provider.generation
    return generation.expected_seconds(seconds)


def run(coroutine: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return asyncio.run(coroutine())


# ---- submit -------------------------------------------------------------------------------


def _body(args: argparse.Namespace) -> dict[str, Any]:
    """The request of `submit`: a new video, or (--remix/--edit/--extend JOB) one made from a
    completed job of the tenant, whose model and size it inherits (and length, but for an
    extension, whose --seconds is the segment it adds)."""
    kind, source = _kind(args)
    given = {f: getattr(args, f) for f in ("model", "size", "seconds") if getattr(args, f)}
    body: dict[str, Any] = {"prompt": args.prompt}
    if kind == "generate":
        body |= {f: request_default(f) for f in ("model", "size", "seconds")} | given
    else:
        if args.image is not None:
            raise CliError(USAGE, f"--{kind} takes no --image (the source job's video is used)")
        if kind == "extend" and "seconds" not in given:
            raise CliError(USAGE, "--extend needs --seconds N: the seconds it adds (4..20)")
        if kind != "extend" and "seconds" in given:
            raise CliError(USAGE, f"--{kind} takes no --seconds (the source job's length)")
        body |= {"kind": kind, "source_job_id": source} | given
    if args.priority != request_default("priority"):
        body["priority"] = args.priority
    if args.image is not None:
        body["input_reference"] = image_data_url(args.image)
    if args.callback_url is not None:
        body["callback_url"] = args.callback_url  # intake checks it (422 invalid_callback_url)
    return body


def _kind(args: argparse.Namespace) -> tuple[str, str | None]:
    for kind in ("remix", "edit", "extend"):
        source = getattr(args, kind, None)
        if source is not None:
            if not JOB_ID_RE.fullmatch(source):
                raise CliError(USAGE, f"--{kind}: {source!r} is not a job id (job_ + 32 hex)")
            return kind, source
    return "generate", None


async def submit(args: argparse.Namespace) -> int:
    body = _body(args)  # a bad --image is a usage error before anything is sent
    where = target(choice(args), args.home, args.tenant)
    if args.verify and (not args.wait or where.local is None):
        raise CliError(USAGE, "--verify needs --wait and the local stack (it reads its S3)")
    key = args.idempotency_key or f"cli:{uuid.uuid4().hex}"
    async with Api(where) as api:
        response = await api.call("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})
        if not response.is_success:
            raise refusal("submit", response)
        answer = _json_or_none(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("job_id"), str):
            raise CliError(UNREACHABLE, f"submit: {where.url} answered no job id")
        job_id = answer["job_id"]
        if not args.json:
            tenant = answer.get("tenant")
            if response.status_code == 200:  # this key's job already exists
                output.line(f"job {job_id} already exists (tenant {tenant}, "
                            f"{answer.get('status')})")  # fmt: skip
            else:
                output.line(f"job {job_id} submitted (tenant {tenant})")
        if not args.wait:
            if args.json:
                output.line(json.dumps(answer))
            return OK
        model = body.get("model") or request_default("model")
        seconds = body.get("seconds") or request_default("seconds")
        guess = expected_seconds(model, seconds, where.local is not None)
        record = await wait(api, job_id, Estimate(guess), args.timeout, quiet=args.json)
        links = None
        if record is not None and record.get("status") == "completed" and not args.json:
            links = await download_links(api, job_id)
    if record is None:
        raise CliError(
            UNREACHABLE,
            f"job {job_id} had not ended after {args.timeout:.0f}s (it goes on; "
            f"`clipline events {job_id} -f` follows it)",
        )
    if args.json:
        output.line(json.dumps(record))
        return OK if record.get("status") == "completed" else REFUSED
    return report(record, where, args, links)


async def download_links(api: Api, job_id: str) -> Links:
    """The job's fresh presigned download links (GET /v1/jobs/{id}/assets) to print; a server
    that gives none, or cannot now, gets the `clipline download` hint instead (the job is
    done: that is no reason to fail the command)."""
    try:
        response = await api.call("GET", f"/v1/jobs/{job_id}/assets")
    except CliError:
        return Links({}, None)
    body = _json_or_none(response) if response.is_success else None
    expires = body.get("expires_at") if isinstance(body, dict) else None
    return Links(downloads.link_map(body), expires if isinstance(expires, str) else None)


@dataclass(frozen=True)
class Links:
    urls: dict[str, str]
    expires_at: str | None


async def wait(
    api: Api, job_id: str, estimate: Estimate, limit: float, *, quiet: bool = False
) -> dict[str, Any] | None:
    """Follow the job until its record says it ended: that record (None past `limit` seconds).
    A terminal event is never believed by itself (anyone who may publish events could forge
    one): it only makes the record be read, and the record decides."""
    bar = Progress(estimate) if not quiet else None
    sink: Callable[[Message], None] = bar.see if bar else (lambda _: None)
    tick = bar.draw if bar else (lambda: None)
    deadline = time.monotonic() + limit
    last_id: str | None = None
    try:
        while True:
            try:
                ended, last_id = await stream(
                    api, job_id, sink, last_id=last_id, tick=tick, deadline=deadline
                )
            except RouteMissing:
                return await poll(api, job_id, sink, tick=tick, deadline=deadline)
            if ended is None:
                return None
            record = await poll(api, job_id, lambda _: None, once=True)
            if record is not None and record.get("status") in TERMINAL_KINDS:
                return record
            # the stream said it ended, the record does not: a forged event; keep following
    finally:
        if bar:
            bar.done()


def report(
    record: dict[str, Any], where: Target, args: argparse.Namespace, links: Links | None = None
) -> int:
    """What the job's record says about its end (never what an event said); a completed job's
    assets with their download links (the local stack's also with their S3 location)."""
    status = record.get("status")
    if status != "completed":
        output.line(f"job {record.get('job_id')} {status}: {record.get('reason')}: "
                    f"{record.get('detail')}")  # fmt: skip
        _trace(record, where)
        return REFUSED
    output.line(f"job {record.get('job_id')} completed{took(record)}")
    urls = links.urls if links is not None else {}
    for asset in record.get("assets") or []:
        variant = str(asset.get("variant", ""))
        stored = f"s3://{asset.get('bucket')}/{asset.get('key')}"
        output.line(f"  {variant:<11} {urls.get(variant, '(no download link)')} "
                    f"({asset.get('size_bytes')} bytes)")  # fmt: skip
        if where.local is not None:
            output.line(f"  {'':<11} stored at {stored}")
    saves = f"`clipline download {record.get('job_id')}` saves the files, verified"
    if urls:
        until = f" until {links.expires_at}" if links and links.expires_at else ""
        output.line(f"links valid{until} (credentials: share with care); {saves}")
    elif record.get("assets"):
        output.line(saves)
    output.line(f"cost: {dollars(record.get('cost_micros'))}")
    _trace(record, where)
    if getattr(args, "verify", False) and where.local is not None:
        return _verify(record, where.local, args)
    return OK


def _trace(record: dict[str, Any], where: Target) -> None:
    """The job's trace id, and its page in the trace UI when one is known."""
    trace_id = record.get("trace_id")
    output.line(f"trace id: {trace_id}")
    link = trace_link(str(trace_id), where) if trace_id else None
    if link:
        output.line(f"trace: {link}")


def trace_link(trace_id: str, where: Target) -> str | None:
    """The trace's page: CLIPLINE_TRACE_URL's template (`{trace_id}` replaced) when set, else
    the local stack's Phoenix when it runs one (`clipline up --observe`), else None."""
    template = os.environ.get(observe.TRACE_URL_ENV)
    if template:
        return template.replace("{trace_id}", trace_id)
    state = StackState.load(where.local) if where.local is not None else None
    if state is not None and state.phoenix_url:
        return observe.trace_link(state.phoenix_url, trace_id)
    return None


def _verify(record: dict[str, Any], home: Path, args: argparse.Namespace) -> int:
    video = next(a for a in record["assets"] if a["variant"] == "video")
    spec = record.get("spec") or {}
    size = str(spec.get("size") or "")
    seconds = int(spec.get("total_seconds") or spec.get("seconds") or 0)  # an extension: stitched
    try:
        facts = verify_video(require(home), video["bucket"], video["key"], size, seconds)
    except VerificationError as exc:
        output.line(f"verification FAILED: {exc}")
        return REFUSED
    output.line(f"verified: {facts}")
    return OK


def took(record: dict[str, Any]) -> str:
    history = record.get("history") or {}
    try:
        started = datetime.fromisoformat(history["accepted"])
        ended = datetime.fromisoformat(history[record["status"]])
    except (KeyError, TypeError, ValueError):
        return ""
    return f" in {round((ended - started).total_seconds(), 3)}s"


def dollars(micros: Any) -> str:
    if not isinstance(micros, int):
        return "unknown"
    return f"${micros / 1_000_000:.2f} ({micros} micro-dollars)"


# ---- jobs list / show ---------------------------------------------------------------------


async def jobs_list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(USAGE, "--limit must be 1 or more")
    async with Api(target(choice(args), args.home, args.tenant)) as api:
        jobs = await list_jobs(api, args.status, args.model, args.limit)
    if args.json:
        for job in jobs:
            output.line(json.dumps(job))
        return OK
    if not jobs:
        output.line("no jobs")
        return OK
    rows = [[str(j.get("job_id")), _status_text(j), str(_spec(j, "kind") or "generate"),
             str(_spec(j, "source_job_id") or "-"), str(_spec(j, "model")),
             str(_spec(j, "size")), _seconds_text(j),
             str((j.get("history") or {}).get("accepted", ""))[:19],
             dollars(j.get("cost_micros")).split(" ")[0]] for j in jobs]  # fmt: skip
    heads = ["JOB", "STATUS", "KIND", "SOURCE", "MODEL", "SIZE", "SECONDS", "ACCEPTED", "COST"]
    output.line(output.table(heads, rows))
    return OK


def _status_text(job: dict[str, Any]) -> str:
    """The status; `completed(deleted)` for a job whose assets were deleted (DELETE
    /v1/videos/{id}): its record stays, its download answers 410."""
    status = str(job.get("status"))
    return f"{status}(deleted)" if job.get("deleted_at") else status


def _seconds_text(job: dict[str, Any]) -> str:
    """The video's length; an extension's as `12(+4)`: the stitched total, and the seconds it
    added (what it was priced by)."""
    seconds, total = _spec(job, "seconds"), _spec(job, "total_seconds")
    if _spec(job, "kind") == "extend" and total not in (None, ""):
        return f"{total}(+{seconds})"
    return str(seconds)


def _spec(job: dict[str, Any], name: str) -> Any:
    spec = job.get("spec") if isinstance(job.get("spec"), dict) else {}
    return job.get(name, (spec or {}).get(name, ""))


async def list_jobs(
    api: Api, status: str | None, model: str | None, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` jobs, following `next_cursor` pages; a server answering the older
    `{"tenant", "jobs": [...]}` (no filters, no pages) is filtered here."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(jobs) < limit:
        params = {"limit": str(min(LIST_PAGE, limit - len(jobs)))}
        params |= {k: v for k, v in (("status", status), ("model", model), ("cursor", cursor)) if v}
        page = await api.json("list jobs", "GET", "/v1/jobs", params=params)
        if isinstance(page, dict) and isinstance(page.get("jobs"), list):  # the older answer
            old = [j for j in page["jobs"] if isinstance(j, dict)]
            old = [j for j in old if (status is None or j.get("status") == status)
                   and (model is None or _spec(j, "model") == model)]  # fmt: skip
            return (jobs + old)[:limit]
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise CliError(UNREACHABLE, "list jobs: the server's answer is not a page of jobs")
        jobs += [j for j in page["data"] if isinstance(j, dict)]
        cursor = page.get("next_cursor")
        if not cursor or not page["data"]:
            break
    return jobs[:limit]


async def jobs_show(args: argparse.Namespace) -> int:
    job_id = _job_arg(args.job_id)
    async with Api(target(choice(args), args.home, args.tenant)) as api:
        record = await api.record(job_id)
    if args.json:
        output.line(json.dumps(record))
        return OK
    spec = record.get("spec") or {}
    output.line(f"job       {record.get('job_id')}")
    progress = f" ({record['progress']}% upstream)" if record.get("progress") else ""
    output.line(f"status    {record.get('status')}{progress}")
    output.line(f"tenant    {record.get('tenant')}")
    kind = spec.get("kind") or "generate"
    if kind != "generate":
        chain = f" (extension {spec.get('extensions')} of the chain)" if kind == "extend" else ""
        output.line(f"kind      {kind} of {spec.get('source_job_id')}{chain}")
    length = f"{spec.get('seconds')}s"
    if kind == "extend" and spec.get("total_seconds") is not None:
        length = f"{spec.get('total_seconds')}s stitched (+{spec.get('seconds')}s added)"
    output.line(f"request   {spec.get('model')} {spec.get('size')} {length}: "
                f"{spec.get('prompt')!r}")  # fmt: skip
    output.line(f"cost      {dollars(record.get('cost_micros'))}")
    if record.get("reason"):
        output.line(f"reason    {record.get('reason')}: {record.get('detail')}")
    for kind, at in sorted((record.get("history") or {}).items(), key=lambda i: str(i[1])):
        output.line(f"  {str(at)[:23]:<23}  {kind}")
    deleted = record.get("deleted_at")
    if deleted:
        output.line(f"deleted   {str(deleted)[:23]}: its assets are removed (download: 410)")
    for asset in [] if deleted else record.get("assets") or []:
        output.line(f"asset     {asset.get('variant'):<11} {asset.get('size_bytes')} bytes, "
                    f"sha256 {str(asset.get('sha256'))[:16]}...")  # fmt: skip
    output.line(f"trace id  {record.get('trace_id')}")
    return OK


def _job_arg(text: str) -> str:
    if not JOB_ID_RE.fullmatch(text):
        raise CliError(USAGE, f"{text!r} is not a job id (job_ followed by 32 hex digits)")
    return text


# ---- events -------------------------------------------------------------------------------


async def events(args: argparse.Namespace) -> int:
    job_id = _job_arg(args.job_id)

    def show(message: Message) -> None:
        if args.json:
            output.line(message.as_json())
            return
        data = message.data
        at = str(data.get("occurred_at") or "")[:23]
        extra = ""
        if message.event == "progress":
            extra = f" {data.get('progress')}% {data.get('upstream_status') or ''}".rstrip()
        elif data.get("reason"):
            extra = f" {data.get('reason')}: {data.get('detail')}"
        output.line(f"{at:<23}  {message.event}{extra}")

    async with Api(target(choice(args), args.home, args.tenant)) as api:
        try:
            await stream(api, job_id, show, idle=None if args.follow else args.idle)
        except RouteMissing:
            await poll(api, job_id, show, once=not args.follow)
    return OK


# ---- cancel -------------------------------------------------------------------------------


async def cancel(args: argparse.Namespace) -> int:
    """Ask intake to cancel a job: 0 when it is cancelling or cancelled, 1 when it ended
    otherwise or is unknown, 2 when clipline cannot be reached."""
    job_id = _job_arg(args.job_id)
    async with Api(target(choice(args), args.home, args.tenant)) as api:
        response = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    body = _json_or_none(response)
    if response.status_code not in (200, 202) or not isinstance(body, dict):
        raise refusal(f"cannot cancel job {job_id}", response)
    if args.json:
        output.line(json.dumps(body))
    elif body.get("status") == "cancelled":
        output.line(f"job {job_id} is cancelled: {body.get('detail')}")
    elif response.status_code == 202:
        output.line(f"job {job_id} is cancelling")
    else:
        output.line(f"job {job_id} was already cancelling")
    return OK


# ---- download -----------------------------------------------------------------------------


def download(args: argparse.Namespace) -> int:
    return downloads.run(args, choice(args))


# ---- the parser ---------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_argument_group("which clipline")
    where.add_argument(
        "--url", default=None, help=f"intake's URL (else ${URL_ENV}, a profile, the local stack)"
    )
    where.add_argument(
        "--api-key", default=None, help=f"API key (else ${KEY_ENV}, a profile's, the stack's)"
    )
    where.add_argument(
        "--profile", default=None, help=f"a profile of the profile file (else ${PROFILE_ENV})"
    )
    where.add_argument(
        "--tenant", default=None, help="the local stack's tenant whose key is used (default)"
    )
    parent.set_defaults(connection=True)
    return parent


CONNECTION = ("url", "api_key", "profile", "tenant")
DEFAULT_TENANT = "default"


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """`clipline --url U --api-key K jobs list`: the job commands' connection options before
    the command too (one given after it wins)."""
    where = parser.add_argument_group("which clipline (the job commands; also after them)")
    for name in CONNECTION:
        where.add_argument(f"--{name.replace('_', '-')}", dest=f"global_{name}", default=None,
                           help=argparse.SUPPRESS)  # fmt: skip


def apply_global_options(args: argparse.Namespace) -> None:
    """Fill a job command's connection options from those given before it; CliError(USAGE)
    when they were given before a command that takes none."""
    given = {name: getattr(args, f"global_{name}", None) for name in CONNECTION}
    if not getattr(args, "connection", False):
        named = [f"--{n.replace('_', '-')}" for n, v in given.items() if v is not None]
        if named:
            raise CliError(USAGE, f"{', '.join(named)}: only the job commands take it "
                                  "(submit, jobs, events, cancel, download)")  # fmt: skip
        return
    for name, value in given.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.tenant is None:
        args.tenant = DEFAULT_TENANT


def add_commands(sub: Any) -> None:
    """Register submit, jobs, events, cancel and download on the CLI's subparsers."""
    conn = _connection_options()
    s = sub.add_parser("submit", parents=[conn], help="submit a job (POST /v1/jobs)")
    s.add_argument("--prompt", required=True)
    model, size, seconds = (request_default(f) for f in ("model", "size", "seconds"))
    inherit = "; with --remix/--edit/--extend: the source's"
    s.add_argument("--model", default=None, help=f"(default: {model}{inherit})")
    s.add_argument("--size", default=None, help=f"WIDTHxHEIGHT (default: {size}{inherit})")
    s.add_argument("--seconds", type=int, default=None,
                   help=f"(default: {seconds}; with --extend: the seconds it adds)")  # fmt: skip
    made_from = s.add_mutually_exclusive_group()
    made_from.add_argument("--remix", metavar="JOB", help="remix a completed job of the tenant")
    made_from.add_argument("--edit", metavar="JOB", help="edit a completed job of the tenant")
    made_from.add_argument("--extend", metavar="JOB", help="extend a completed job (--seconds)")
    s.add_argument("--priority", choices=PRIORITIES, default=request_default("priority"),
                   help="under the upstream's rate limit, higher goes first")  # fmt: skip
    s.add_argument("--idempotency-key", default=None, help="(default: a new one)")
    s.add_argument("--image", type=Path, default=None, help="first frame (must match --size)")
    s.add_argument("--callback-url", metavar="URL", default=None,
                   help="POST the job's end here, signed (docs/webhooks.md)")  # fmt: skip
    s.add_argument("--wait", action="store_true", help="follow the job to its end")
    s.add_argument("--verify", action="store_true", help="with --wait: decode the stored MP4")
    s.add_argument("--timeout", type=float, default=600.0, help="--wait at most so long (600)")
    s.add_argument("--json", action="store_true", help="print the answer (or final record)")
    s.set_defaults(func=lambda a: run(lambda: submit(a)))

    j = sub.add_parser("jobs", help="list or show jobs")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    ls = jsub.add_parser("list", parents=[conn], help="the newest jobs (GET /v1/jobs)")
    ls.add_argument("--status", default=None, help="only jobs of this status")
    ls.add_argument("--model", default=None, help="only jobs of this model")
    ls.add_argument("--limit", type=int, default=20, help="at most so many (20)")
    ls.add_argument("--json", action="store_true", help="one job record per line")
    ls.set_defaults(func=lambda a: run(lambda: jobs_list(a)))
    sh = jsub.add_parser("show", parents=[conn], help="one job's record")
    sh.add_argument("job_id", help="the job id (job_...)")
    sh.add_argument("--json", action="store_true", help="the record as JSON")
    sh.set_defaults(func=lambda a: run(lambda: jobs_show(a)))

    e = sub.add_parser("events", parents=[conn], help="a job's events (-f: until it ends)")
    e.add_argument("job_id", help="the job id (job_...)")
    e.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    e.add_argument("--idle", type=float, default=1.0, help=argparse.SUPPRESS)
    e.add_argument("--json", action="store_true", help="one event per line")
    e.set_defaults(func=lambda a: run(lambda: events(a)))

    c = sub.add_parser("cancel", parents=[conn],
                       help="cancel a job (before submission nothing is spent)")  # fmt: skip
    c.add_argument("job_id", help="the job id (job_...)")
    c.add_argument("--json", action="store_true", help="the job's record after the request")
    c.set_defaults(func=lambda a: run(lambda: cancel(a)))

    d = sub.add_parser("download", parents=[conn],
                       help="save a completed job's assets, verified by sha256")  # fmt: skip
    d.add_argument("job_id", help="the job id (job_...)")
    d.add_argument("--variant", action="extend", nargs="+", choices=VARIANTS, default=None,
                   help="video, thumbnail and/or spritesheet (default: all)")  # fmt: skip
    d.add_argument("-o", "--output", type=Path, default=Path(), help="folder (default: .)")
    d.set_defaults(func=download)

"""Composition root and HTTP surface of the simulator: the Videos API over an in-memory job table
(optionally journaled to disk, services/simulator/journal.py, so it survives a restart).

A plain ASGI app rather than a framework: the simulator must stay far faster than the pipeline
it serves, and some faults (a connection dropped after a create, a truncated download) need
control over exactly what is sent. Each route is a thin shell over one decision in `domain`,
`limits` or `faults`. The choices made where the reference says UNCONFIRMED are listed in
services/simulator/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl

import httpx
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request as StarletteRequest
from starlette.types import Message, Receive, Scope, Send

from services.simulator import domain, forms, limits
from services.simulator.assets import AssetCache, Padded, sniff_image
from services.simulator.clock import Clock, SystemClock
from services.simulator.domain import BodyKind, Invalid, JobError, Phase, Timeline
from services.simulator.faults import FaultPlan, Faults, Operation
from services.simulator.journal import Journal, State
from services.simulator.records import Attempt, Character, CreateRecord, Job
from services.simulator.settings import SimulatorSettings
from services.simulator.webhooks import EventType, WebhookDispatcher
from shared import metrics

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
MAX_FIELD_BYTES = 21 * 1024 * 1024  # an input_reference[image_url] data URL may be 20 MiB
MAX_BODY_BYTES = 64 * 1024 * 1024
JSON_UNPARSABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
UNSUPPORTED_MEDIA = (
    "Unsupported content type: '{0}'. This API method only accepts {1} requests, but you "
    "specified the header 'Content-Type: {0}'. Please try again with a supported content type."
)
SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
JSON_OR_FORM = "'application/json' and 'multipart/form-data'"
FORM_ONLY = "'multipart/form-data'"
T = TypeVar("T")
CREATE_OPERATIONS = frozenset({"create", "remix", "edit", "extend"})
TEMPLATES: dict[str, str] = {
    "create": "POST /v1/videos",
    "list": "GET /v1/videos",
    "retrieve": "GET /v1/videos/{video_id}",
    "delete": "DELETE /v1/videos/{video_id}",
    "content": "GET /v1/videos/{video_id}/content",
    "remix": "POST /v1/videos/{video_id}/remix",
    "edit": "POST /v1/videos/edits",
    "extend": "POST /v1/videos/extensions",
    "character_create": "POST /v1/videos/characters",
    "character_get": "GET /v1/videos/characters/{character_id}",
}
"""Each API operation's endpoint template: the `endpoint` label of clipline.simulator.requests
(health and control routes are their own fixed paths; anything unrouted is OTHER_ENDPOINT)."""
OTHER_ENDPOINT = "other"
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NewJob:
    """What an accepted create, remix, edit or extension asks for."""

    kind: str
    model: str
    base_model: str
    prompt: str
    size: str
    seconds: str
    source_video_id: str | None = None
    remixed_from: str | None = None
    extensions: int = 0
    first_frame: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_source(
        cls,
        kind: str,
        source: Job,
        prompt: str,
        *,
        seconds: str | None = None,
        remixed_from: str | None = None,
        extensions: int | None = None,
    ) -> NewJob:
        """A job made from a completed video: its model and size, the same length by default."""
        return cls(
            kind=kind,
            model=source.model,
            base_model=source.base_model,
            prompt=prompt,
            size=source.size,
            seconds=source.seconds if seconds is None else seconds,
            source_video_id=source.id,
            remixed_from=remixed_from,
            extensions=source.extensions if extensions is None else extensions,
        )


class ApiError(Exception):
    def __init__(self, status: int, error: Invalid, headers: Mapping[str, str] | None = None):
        super().__init__(error.message)
        self.status = status
        self.error = error
        self.headers = dict(headers or {})


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Chunks | None = None  # a padded, throttled or truncated download
    drop: bool = False  # send the headers, then cut the connection


def json_response(status: int, payload: object, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, headers=headers or {})


def envelope(error: Invalid) -> dict[str, object]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


class Request:
    """The bits of an ASGI request the routes read."""

    __slots__ = ("headers", "method", "path", "query", "receive", "scope", "template")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.template = OTHER_ENDPOINT  # the route's, once one matched
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        raw_query: bytes = scope.get("query_string", b"")
        self.query: dict[str, str] = (
            dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
            if raw_query
            else {}
        )
        self.headers: dict[str, str] = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
        }

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()

    async def body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client disconnected")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, Invalid("Request body too large."))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _small_body(self) -> bool:
        length = self.headers.get("content-length", "")
        return length.isdigit() and int(length) <= forms.MAX_FAST_BYTES

    async def params(self, *, form_only: bool = False) -> tuple[dict[str, object], BodyKind]:
        """A JSON object, or a (multipart or urlencoded) form folded into nested params."""
        media = self.media_type
        if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
            receive = self.receive
            boundary = forms.boundary_of(self.headers.get("content-type", ""))
            if media == "multipart/form-data" and boundary and self._small_body():
                raw = await self.body()
                simple = forms.text_fields(raw, boundary)
                if simple is not None:
                    return _raise_invalid(domain.fold_form(simple)), "form"
                receive = _replay(raw)
            try:
                request = StarletteRequest(self.scope, receive)
                async with request.form(max_part_size=MAX_FIELD_BYTES) as form:
                    fields = [
                        (name, await _form_value(value)) for name, value in form.multi_items()
                    ]
            except MultiPartException as exc:
                raise ApiError(
                    400, Invalid(f"Could not parse the multipart form: {exc.message}")
                ) from exc
            return _raise_invalid(domain.fold_form(fields)), "form"
        if form_only or (media and media != "application/json" and not media.endswith("+json")):
            allowed = FORM_ONLY if form_only else JSON_OR_FORM
            raise ApiError(400, Invalid(UNSUPPORTED_MEDIA.format(media or "none", allowed)))
        raw = await self.body()
        try:
            parsed = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise ApiError(400, Invalid(JSON_UNPARSABLE)) from exc
        if not isinstance(parsed, dict):
            raise ApiError(400, Invalid("Invalid request body: expected a JSON object."))
        return parsed, "json"


Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    operation: Operation | None  # None: not part of the API (health, control)
    handler: Handler
    args: tuple[str, ...] = ()


class Simulator:
    """The job table, the endpoints over it, and the ASGI entry point. Status is computed on
    read from the clock, so no timer runs per job. With a journal, every change to the tables
    is written to it before the response goes out, and `state` is what it held at start-up."""

    def __init__(
        self,
        settings: SimulatorSettings,
        clock: Clock,
        random_bytes: Callable[[int], bytes],
        cache: AssetCache,
        webhooks: WebhookDispatcher | None,
        *,
        journal: Journal | None = None,
        state: State | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._random_bytes = random_bytes
        self._cache = cache
        self._webhooks = webhooks
        self._contract = domain.CONTRACTS[settings.contract]
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self._rpm = limits.limits_for(settings.rate_limit_tier, settings.rpm)
        self._patterns = [re.compile(p, re.IGNORECASE) for p in settings.moderation_patterns]
        self.plan = FaultPlan(settings.faults)
        self._journal = journal
        self._reset_state(state or State())
        # Webhooks of restored jobs that finish later; scheduled once the event loop runs.
        now = clock.monotonic()
        self._resumed_webhooks = (
            [job for job in self.jobs.values() if self._due(job) > now] if webhooks else []
        )

    def _reset_state(self, state: State) -> None:
        self.jobs: dict[str, Job] = state.jobs
        # Every id ever created, deleted ones included: one per accepted create.
        self._order: list[str] = [record.video_id for record in state.creates]
        self._position: dict[str, int] = {video_id: n for n, video_id in enumerate(self._order)}
        self.characters: dict[str, Character] = state.characters
        self.creates: list[CreateRecord] = state.creates
        self.attempts: list[Attempt] = state.attempts
        self._buckets: dict[str, limits.Bucket] = {}
        # Retrieves per video id (memory only): what following a job cost, for benchmarks.
        self._retrieves: dict[str, int] = {}

    # --- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._resumed_webhooks:
            self._resume_webhooks()
        request_id = "req_" + secrets.token_hex(16)
        request = Request(scope, receive)
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            response = await self._dispatch(request)
        except ApiError as exc:
            response = json_response(exc.status, envelope(exc.error), exc.headers)
        except ConnectionResetError:
            return
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            error = Invalid(SERVER_ERROR, type="server_error")
            response = json_response(500, envelope(error))
        labels = {"endpoint": request.template, "status": str(response.status)}
        metrics.SIMULATOR_REQUESTS.add(1, labels)
        try:
            await _send(send_started, response, request_id)
        except Exception:
            if started:
                raise
            log.exception("could not send the response to %s %s", request.method, request.path)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._resume_webhooks()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        if self._webhooks is not None:
            await self._webhooks.aclose()
        if self._journal is not None:
            self._journal.close()

    async def _dispatch(self, request: Request) -> Response:
        route = self._route(request.method, request.path)
        op = route.operation
        request.template = TEMPLATES[op] if op is not None else f"{request.method} {request.path}"
        if route.operation is None:
            return await route.handler(request, *route.args)
        if route.operation == "retrieve" and route.args[0] in self._position:
            self._retrieves[route.args[0]] = self._retrieves.get(route.args[0], 0) + 1
        if route.operation not in CREATE_OPERATIONS:
            return await self._serve(route, request)
        try:
            response = await self._serve(route, request)
        except ApiError as exc:
            self._attempted(route.operation, request, exc.status)
            raise
        self._attempted(route.operation, request, response.status)
        return response

    async def _serve(self, route: Route, request: Request) -> Response:
        assert route.operation is not None
        refused = domain.authorize(request.headers.get("authorization"), self._key)
        if refused is not None:
            raise ApiError(401, refused)
        fault = self.plan.on_request(route.operation)
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.error_status is not None:
            raise ApiError(fault.error_status, Invalid(SERVER_ERROR, type="server_error"))
        if fault.rate_limited:
            retry = self.plan.faults.rate_limit_retry_after_ms / 1000
            raise ApiError(429, limits.injected(route.operation), limits.retry_headers(retry))
        return await route.handler(request, *route.args)

    def _attempted(self, operation: Operation, request: Request, status: int) -> None:
        attempt = Attempt(
            operation=operation,
            status=status,
            client_request_id=request.headers.get("x-client-request-id"),
            idempotency_key=request.headers.get("idempotency-key"),
            at=int(self._clock.time()),
        )
        if self._journal is not None:
            self._journal.attempted(attempt)
        self.attempts.append(attempt)

    def _route(self, method: str, path: str) -> Route:
        parts = path.split("/")[1:]
        if not path.startswith("/") or "" in parts:
            raise ApiError(404, _invalid_url(method, path))
        if parts in (["healthz"], ["v1", "healthz"]):
            return self._pick(method, path, {"GET": Route(None, self.healthz)})
        if parts[0] == "control" and len(parts) == 2:
            control = {
                "creates": {"GET": Route(None, self.list_creates)},
                "attempts": {"GET": Route(None, self.list_attempts)},
                "videos": {"GET": Route(None, self.list_videos)},
                "faults": {
                    "GET": Route(None, self.get_faults),
                    "PUT": Route(None, self.put_faults),
                },
                "webhooks": {"GET": Route(None, self.list_webhooks)},
                "reset": {"POST": Route(None, self.reset)},
            }.get(parts[1])
            if control is not None:
                return self._pick(method, path, control)
        if parts[:2] == ["v1", "videos"]:
            routes = self._video_routes(parts[2:])
            if routes is not None:
                return self._pick(method, path, routes)
        raise ApiError(404, _invalid_url(method, path))

    def _video_routes(self, rest: list[str]) -> dict[str, Route] | None:
        edits = self._contract.edits
        match rest:
            case []:
                return {"GET": Route("list", self.list), "POST": Route("create", self.create)}
            case ["edits"] if edits:
                return {"POST": Route("edit", self.edit)}
            case ["extensions"] if edits:
                return {"POST": Route("extend", self.extend)}
            case ["characters"] if edits:
                return {"POST": Route("character_create", self.create_character)}
            case ["characters", character_id] if edits:
                return {"GET": Route("character_get", self.get_character, (character_id,))}
            case ["edits" | "extensions" | "characters"] if not edits:
                return None  # not part of the launch contract: an unknown URL
            case [video_id]:
                return {
                    "GET": Route("retrieve", self.retrieve, (video_id,)),
                    "DELETE": Route("delete", self.delete, (video_id,)),
                }
            case [video_id, "content"]:
                return {"GET": Route("content", self.content, (video_id,))}
            case [video_id, "remix"]:
                return {"POST": Route("remix", self.remix, (video_id,))}
        return None

    @staticmethod
    def _pick(method: str, path: str, routes: dict[str, Route]) -> Route:
        route = routes.get(method)
        if route is None:  # the API answers a known path with another method like any bad URL
            raise ApiError(404, _invalid_url(method, path))
        return route

    # --- the API ----------------------------------------------------------------------------

    async def healthz(self, _: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def create(self, request: Request) -> Response:
        params, body = await request.params()
        params = _raise_invalid(_inline_data_url(params))
        decided = _raise_invalid(
            domain.validate_create(params, body, self._contract, self.characters)
        )
        reference = params.get("input_reference")
        spec = NewJob(
            kind="create",
            model=decided.model,
            base_model=decided.base_model,
            prompt=decided.prompt,
            size=decided.size,
            seconds=decided.seconds,
            first_frame=reference.data if isinstance(reference, domain.Upload) else None,
        )
        return self._accept(request, spec)

    async def remix(self, request: Request, video_id: str) -> Response:
        params, _ = await request.params()
        decided = _raise_invalid(domain.validate_remix(params, video_id))
        source = self._source(video_id, "only completed videos can be remixed")
        return self._accept(
            request, NewJob.from_source("remix", source, decided.prompt, remixed_from=source.id)
        )

    async def edit(self, request: Request) -> Response:
        params, body = await request.params()
        decided = _raise_invalid(domain.validate_edit(params, body))
        source = self._source(decided.video_id, "only completed videos can be edited")
        return self._accept(request, NewJob.from_source("edit", source, decided.prompt))

    async def extend(self, request: Request) -> Response:
        params, body = await request.params()
        decided = _raise_invalid(domain.validate_extension(params, body, self._contract))
        source = self._source(decided.video_id, "only completed videos can be extended")
        added = int(decided.seconds or 0)
        _raise_invalid_or_none(
            domain.check_extension(source.id, int(source.seconds), source.extensions, added)
        )
        spec = NewJob.from_source(
            "extension",
            source,
            decided.prompt,
            seconds=str(int(source.seconds) + added),
            extensions=source.extensions + 1,
        )
        return self._accept(request, spec)

    async def retrieve(self, _: Request, video_id: str) -> Response:
        job = self._job(video_id)
        phase = self._phase(job)
        hint = self._settings.poll_after_ms
        headers = {} if phase.terminal or hint is None else {"openai-poll-after-ms": str(hint)}
        return json_response(200, self._video_json(job, phase), headers)

    async def list(self, request: Request) -> Response:
        query = _raise_invalid(domain.parse_list_query(request.query))
        page = _raise_invalid(domain.paginate(self._order, self._position, self.jobs, query))
        data = [
            self._video_json(job, self._phase(job)) for job in map(self.jobs.__getitem__, page.ids)
        ]
        return json_response(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": page.ids[0] if page.ids else None,
                "last_id": page.ids[-1] if page.ids else None,
                "has_more": page.has_more,
            },
        )

    async def delete(self, _: Request, video_id: str) -> Response:
        job = self._job(video_id)
        refused = domain.check_deletable(job.id, self._phase(job))
        if refused is not None:
            raise ApiError(409, refused)
        if self._journal is not None:
            self._journal.deleted(job.id)
        del self.jobs[job.id]  # its cursor position stays valid for list
        return json_response(200, {"id": job.id, "object": "video.deleted", "deleted": True})

    async def content(self, request: Request, video_id: str) -> Response:
        variant: domain.Variant = _raise_invalid(
            domain.parse_variant(request.query.get("variant", "video"))
        )
        job = self._job(video_id)
        phase = self._phase(job)
        refused = domain.check_downloadable(job.id, phase)
        if refused is not None:
            raise ApiError(_source_status(refused), refused)
        expires = domain.expires_at(job.completed_at, self._settings.expires_after_seconds)
        if self._clock.time() >= expires:
            raise ApiError(404, domain.expired(job.id))
        asset = await self._cache.get(
            variant, job.width, job.height, int(job.seconds), job.first_frame
        )
        # Large-asset mode: the MP4 padded to VIDEO_BYTES, streamed (the padding is made as it
        # is sent, so a 1 GiB video costs the simulator no more memory than the plain one).
        body = Padded.of(asset.data, self._settings.video_bytes if variant == "video" else 0)
        fault = self.plan.on_download(body.total)
        if fault.bytes_per_second is None and fault.truncate_at is None and not body.padded:
            return Response(200, asset.data, asset.media_type)
        stream = Chunks(body, fault.bytes_per_second, fault.truncate_at)
        return Response(200, content_type=asset.media_type, stream=stream)

    async def create_character(self, request: Request) -> Response:
        params, _ = await request.params(form_only=True)
        decided = _raise_invalid(domain.validate_character(params))
        character = Character(
            id="char_" + self._random_bytes(domain.VIDEO_ID_BYTES).hex(),
            name=decided.name,
            created_at=int(self._clock.time()),
        )
        if self._journal is not None:
            self._journal.character(character)
        self.characters[character.id] = character
        return json_response(200, asdict(character))

    async def get_character(self, _: Request, character_id: str) -> Response:
        character = self.characters.get(character_id)
        if character is None:
            raise ApiError(
                404,
                Invalid(f"Character with id '{character_id}' not found.", code="not_found"),
            )
        return json_response(200, asdict(character))

    # --- control ----------------------------------------------------------------------------

    async def list_creates(self, request: Request) -> Response:
        return _accounting(self.creates, request)

    async def list_attempts(self, request: Request) -> Response:
        return _accounting(self.attempts, request)

    async def list_videos(self, _: Request) -> Response:
        """Every job in the table: when it was created and finishes (wall clock, float seconds,
        the clock a benchmark reads) and how many retrieves named it, refused ones included."""
        return json_response(
            200,
            [
                {
                    "id": job.id,
                    "status": self._phase(job).status,
                    "created_at": job.created_wall,
                    "finishes_at": job.created_wall + job.timeline.total_seconds,
                    "retrieves": self._retrieves.get(job.id, 0),
                }
                for job in self.jobs.values()
            ],
        )

    async def get_faults(self, _: Request) -> Response:
        return json_response(200, self.plan.faults.model_dump(mode="json"))

    async def put_faults(self, request: Request) -> Response:
        try:
            faults = Faults.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(part) for part in first["loc"]) or None
            raise ApiError(400, Invalid(f"Invalid faults: {first['msg']}", param)) from exc
        self.plan = FaultPlan(faults)
        return json_response(200, faults.model_dump(mode="json"))

    async def list_webhooks(self, _: Request) -> Response:
        deliveries = self._webhooks.log() if self._webhooks is not None else []
        return json_response(200, [delivery.to_dict() for delivery in deliveries])

    async def reset(self, _: Request) -> Response:
        if self._journal is not None:
            self._journal.reset()
        self._reset_state(State())
        self._resumed_webhooks = []
        self.plan = FaultPlan(self.plan.faults)
        if self._webhooks is not None:
            self._webhooks.reset()
        return json_response(200, {"reset": True})

    # --- internals --------------------------------------------------------------------------

    def _accept(self, request: Request, spec: NewJob) -> Response:
        """Take a rate-limit token, start the job, answer with the queued Video."""
        rate = self._take(spec.base_model)
        job, dropped = self._start_job(request, spec)
        return self._created(job, rate, dropped)

    def _start_job(self, request: Request, spec: NewJob) -> tuple[Job, bool]:
        fate = self.plan.for_job(
            len(self.creates), self._settings.queue_seconds, self._settings.generation_seconds
        )
        queue, generation = fate.queue_seconds, fate.generation_seconds
        error: JobError | None = domain.moderate(spec.prompt, self._patterns)
        if error is not None:
            generation = 0.0  # blocked as soon as it leaves the queue
        elif fate.fails:
            error = domain.INTERNAL
        timeline = Timeline(queue, generation, error)
        now = self._clock.time()
        job = Job(
            id=domain.new_video_id(self._random_bytes(domain.VIDEO_ID_BYTES)),
            model=spec.model,
            base_model=spec.base_model,
            prompt=spec.prompt,
            size=spec.size,
            seconds=spec.seconds,
            created_at=int(now),
            created_wall=now,
            started=self._clock.monotonic(),
            timeline=timeline,
            completed_at=domain.completed_at(now, timeline),
            remixed_from=spec.remixed_from,
            extensions=spec.extensions,
            first_frame=spec.first_frame,
        )
        record = CreateRecord(
            video_id=job.id,
            kind=spec.kind,
            client_request_id=request.headers.get("x-client-request-id"),
            idempotency_key=request.headers.get("idempotency-key"),
            content_type=request.media_type,
            model=spec.model,
            size=spec.size,
            seconds=spec.seconds,
            created_at=job.created_at,
            source_video_id=spec.source_video_id,
            dropped=fate.dropped,
        )
        if self._journal is not None:
            self._journal.created(record, job)
        self.jobs[job.id] = job
        if len(self.jobs) > self._settings.max_jobs:  # long runs: forget the oldest job
            del self.jobs[next(iter(self.jobs))]
        self._position[job.id] = len(self._order)
        self._order.append(job.id)
        self.creates.append(record)
        metrics.SIMULATOR_CREATES.add(1, {"model": spec.model})
        self._schedule_webhook(job)
        return job, fate.dropped

    def _due(self, job: Job) -> float:
        """When `job` finishes, on this process's monotonic clock."""
        return job.started + job.timeline.total_seconds

    def _schedule_webhook(self, job: Job) -> None:
        if self._webhooks is not None:
            kind: EventType = "video.completed" if job.timeline.error is None else "video.failed"
            self._webhooks.schedule(job.id, kind, self._due(job))

    def _resume_webhooks(self) -> None:
        """Restored jobs that finish after the restart still announce it. Events that fell due
        while the simulator was down are not sent: their delivery was never recorded."""
        resumed, self._resumed_webhooks = self._resumed_webhooks, []
        for job in resumed:
            if job.id in self.jobs:
                self._schedule_webhook(job)

    def _created(self, job: Job, rate: limits.Verdict | None, dropped: bool) -> Response:
        headers = limits.headers(rate) if rate is not None else {}
        response = json_response(200, self._video_json(job, Phase("queued", 0)), headers)
        response.drop = dropped
        return response

    def _take(self, base_model: str) -> limits.Verdict | None:
        """One request from the model's bucket; 429 when it is empty."""
        if self._rpm is None or base_model not in self._rpm:
            return None
        now = self._clock.monotonic()
        bucket = self._buckets.get(base_model)
        if bucket is None:
            bucket = self._buckets[base_model] = limits.Bucket(self._rpm[base_model], now)
        verdict = bucket.take(now)
        if not verdict.allowed:
            raise ApiError(429, limits.exceeded(base_model, verdict), limits.headers(verdict))
        return verdict

    def _source(self, video_id: str, purpose: str) -> Job:
        job = self._job(video_id)
        refused = domain.check_source(job.id, self._phase(job), purpose)
        if refused is not None:
            raise ApiError(_source_status(refused), refused)
        return job

    def _job(self, video_id: str) -> Job:
        job = self.jobs.get(video_id)
        if job is None:
            raise ApiError(404, domain.not_found(video_id))
        return job

    def _phase(self, job: Job) -> Phase:
        return domain.phase_at(self._clock.monotonic() - job.started, job.timeline)

    def _video_json(self, job: Job, phase: Phase) -> dict[str, object]:
        """The full 13-key Video object (reference §2.1): absent values are null, never omitted."""
        completed = phase.status == "completed"
        failed = phase.status == "failed"
        error = job.timeline.error
        return {
            "id": job.id,
            "object": "video",
            "model": job.model,
            "status": phase.status,
            "progress": phase.progress,
            "created_at": job.created_at,
            "completed_at": job.completed_at if phase.terminal else None,
            "expires_at": (
                domain.expires_at(job.completed_at, self._settings.expires_after_seconds)
                if completed
                else None
            ),
            "prompt": job.prompt,
            "size": job.size,
            "seconds": job.seconds,
            "remixed_from_video_id": job.remixed_from,
            "error": ({"code": error.code, "message": error.message} if failed and error else None),
        }


def build_app(
    settings: SimulatorSettings,
    *,
    clock: Clock | None = None,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    cache: AssetCache | None = None,
    webhook_client: httpx.AsyncClient | None = None,
) -> Simulator:
    """The simulator as an ASGI app. Tests pass a fake clock, and an httpx client for webhooks.
    With `settings.state_dir`, the state kept there is loaded first (JournalError if unusable)."""
    clock = clock or SystemClock()
    journal, state = None, None
    if settings.state_dir is not None:
        journal, state = Journal.open(settings.state_dir, max_jobs=settings.max_jobs, clock=clock)
    webhooks = None
    if settings.webhook_url is not None:
        assert settings.webhook_secret is not None  # the settings insist on one
        webhooks = WebhookDispatcher(
            settings.webhook_url,
            settings.webhook_secret.get_secret_value(),
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            backoff_max_seconds=settings.webhook_backoff_max_seconds,
            client=webhook_client,
            clock=clock,
            random_bytes=random_bytes,
        )
    return Simulator(
        settings,
        clock,
        random_bytes,
        cache
        or AssetCache(fps=settings.fps, asset_dir=settings.asset_dir, small=settings.small_assets),
        webhooks,
        journal=journal,
        state=state,
    )


def _accounting(records: list[CreateRecord] | list[Attempt], request: Request) -> Response:
    """Accounting records as JSON, optionally only those of one `client_request_id`."""
    wanted = request.query.get("client_request_id")
    return json_response(
        200,
        [
            asdict(record)
            for record in records
            if wanted is None or record.client_request_id == wanted
        ],
    )


def _raise_invalid(decided: T | Invalid) -> T:
    if isinstance(decided, Invalid):
        raise ApiError(400, decided)
    return decided


def _raise_invalid_or_none(refused: Invalid | None) -> None:
    if refused is not None:
        raise ApiError(400, refused)


def _source_status(refused: Invalid) -> int:
    return 409 if refused.code == "video_not_ready" else 400


def _replay(body: bytes) -> Receive:
    """A `receive` that hands the already-read body to a second parser."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _invalid_url(method: str, path: str) -> Invalid:
    return Invalid(f"Invalid URL ({method} {path})")


async def _form_value(value: str | UploadFile) -> object:
    if isinstance(value, str):
        return value
    if value.size is not None and value.size > MAX_FILE_BYTES:
        raise ApiError(
            400, Invalid(f"File too large: at most {MAX_FILE_BYTES} bytes per file.", "file")
        )
    return sniff_image(await value.read())


def _inline_data_url(params: dict[str, object]) -> dict[str, object] | Invalid:
    """`input_reference: {image_url: "data:image/...;base64,..."}` (JSON, or the bracket field
    `input_reference[image_url]`) is checked like an uploaded file (format and size) and becomes
    the first frame. Remote URLs are accepted as they are, never fetched."""
    reference = params.get("input_reference")
    if not isinstance(reference, dict) or set(reference) != {"image_url"}:
        return params
    url = reference["image_url"]
    if not isinstance(url, str) or not url.startswith("data:"):
        return params
    header, comma, encoded = url.partition(",")
    try:
        if not comma or not header.endswith(";base64"):
            raise ValueError("not base64")
        data = base64.b64decode(encoded, validate=True)
    except ValueError:
        return Invalid(
            "Invalid 'input_reference.image_url': expected a base64-encoded data URL.",
            param="input_reference.image_url",
            code="invalid_value",
        )
    return {**params, "input_reference": sniff_image(data)}


async def _send(send: Send, response: Response, request_id: str) -> None:
    stream = response.stream
    length = stream.total if stream is not None else len(response.body)
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(length).encode()),
        (b"x-request-id", request_id.encode()),
        *((k.encode(), v.encode()) for k, v in response.headers.items()),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.drop:
        return  # the server closes a connection whose response never completed
    if stream is None:
        await send({"type": "http.response.body", "body": response.body})
        return
    async for chunk in stream:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if stream.sent < stream.total:
        return  # truncated on purpose: leave the response incomplete
    await send({"type": "http.response.body", "body": b""})


class Chunks:
    """The asset in chunks, optionally throttled to `rate` bytes/s and cut at `stop` bytes;
    `total` (the whole asset) is what Content-Length announces."""

    def __init__(self, body: Padded, rate: int | None, stop: int | None) -> None:
        self._body = body
        self._rate = rate
        self.total = body.total
        self._stop = self.total if stop is None else stop
        self.sent = 0

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self.sent >= self._stop:
            raise StopAsyncIteration
        size = CHUNK_BYTES if self._rate is None else max(1, min(CHUNK_BYTES, self._rate // 10))
        chunk = self._body.read(self.sent, min(size, self._stop - self.sent))
        if self._rate is not None:
            await asyncio.sleep(len(chunk) / self._rate)
        self.sent += len(chunk)
        return chunk

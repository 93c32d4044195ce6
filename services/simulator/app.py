"""Composition root and HTTP surface of the simulator: `/v1/videos` over an in-memory job table."""

# Routes live here rather than in a handlers module: each is a thin shell over one domain
# decision and they share the job table, so the file reads best as one piece.
#
# Choices where the reference leaves real behaviour UNCONFIRMED:
# - Content of a job that is not completed, and deleting a job that is neither completed nor
#   failed: 409 with the error envelope (code `video_not_ready` / `video_not_finished`). 409
#   reads as "retry later", which is what it is: the job will finish.
# - Unknown video id: 404, type `invalid_request_error`, code `not_found`, param null.
# - Unknown route: 404 (405 for a known path with another method), message "Invalid URL (GET …)".
# - Assets never expire: `expires_at` is reported (completed_at + 3600) but not enforced.

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import MutableHeaders, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.simulator import domain
from services.simulator.assets import AssetCache, sniff_image
from services.simulator.domain import BodyKind, CreateRequest, Invalid, Phase, Timeline
from services.simulator.settings import SimulatorSettings

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
MAX_FIELD_BYTES = 21 * 1024 * 1024  # an input_reference[image_url] data URL may be 20 MiB
JSON_UNPARSABLE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
UNSUPPORTED_MEDIA = (
    "Unsupported content type: '{0}'. This API method only accepts 'application/json' and "
    "'multipart/form-data' requests, but you specified the header 'Content-Type: {0}'. "
    "Please try again with a supported content type."
)


class Clock(Protocol):
    """Both clocks the simulator reads: monotonic for the timeline, wall for timestamps."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    request: CreateRequest
    created_at: int
    started: float  # Clock.monotonic() at creation; the timeline runs from here
    completed_at: int


@dataclass(frozen=True, slots=True)
class CreateRecord:
    """One accepted create, with the client's dedup headers: proof of exactly-once upstream."""

    video_id: str
    client_request_id: str | None
    idempotency_key: str | None
    model: str
    size: str
    seconds: str
    created_at: int


class ApiError(Exception):
    def __init__(self, status: int, error: Invalid) -> None:
        super().__init__(error.message)
        self.status = status
        self.error = error


def envelope(error: Invalid) -> dict[str, object]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


class Simulator:
    """The job table and the endpoints over it. Status is computed on read from the clock."""

    def __init__(
        self,
        settings: SimulatorSettings,
        clock: Clock,
        random_bytes: Callable[[int], bytes],
        cache: AssetCache,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._random_bytes = random_bytes
        self._cache = cache
        self._timeline = Timeline(settings.queue_seconds, settings.generation_seconds)
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        self.jobs: dict[str, Job] = {}
        self.creates: list[CreateRecord] = []

    async def authenticate(self, request: Request) -> None:
        refused = domain.authorize(request.headers.get("authorization"), self._key)
        if refused is not None:
            raise ApiError(401, refused)

    async def healthz(self) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def list_creates(self) -> JSONResponse:
        return JSONResponse([asdict(record) for record in self.creates])

    async def create(self, request: Request) -> JSONResponse:
        params, body = await _read_create_body(request)
        decided = params if isinstance(params, Invalid) else domain.validate_create(params, body)
        if isinstance(decided, Invalid):
            raise ApiError(400, decided)
        now = self._clock.time()
        job = Job(
            id=domain.new_video_id(self._random_bytes(domain.VIDEO_ID_BYTES)),
            request=decided,
            created_at=int(now),
            started=self._clock.monotonic(),
            completed_at=domain.completed_at(now, self._timeline),
        )
        self.jobs[job.id] = job
        self.creates.append(
            CreateRecord(
                video_id=job.id,
                client_request_id=request.headers.get("x-client-request-id"),
                idempotency_key=request.headers.get("idempotency-key"),
                model=decided.model,
                size=decided.size,
                seconds=decided.seconds,
                created_at=job.created_at,
            )
        )
        return JSONResponse(_video_json(job, Phase("queued", 0)))

    async def retrieve(self, video_id: str) -> JSONResponse:
        job = self._job(video_id)
        phase = self._phase(job)
        headers = (
            {} if phase.terminal else {"openai-poll-after-ms": str(self._settings.poll_after_ms)}
        )
        return JSONResponse(_video_json(job, phase), headers=headers)

    async def content(self, video_id: str, variant: str = "video") -> Response:
        chosen = domain.parse_variant(variant)
        if isinstance(chosen, Invalid):
            raise ApiError(400, chosen)
        job = self._job(video_id)
        refused = domain.check_downloadable(job.id, self._phase(job))
        if refused is not None:
            raise ApiError(409, refused)
        request = job.request
        asset = await self._cache.get(chosen, request.width, request.height, int(request.seconds))
        return StreamingResponse(
            _chunks(asset.data),
            media_type=asset.media_type,
            headers={"content-length": str(len(asset.data))},
        )

    async def delete(self, video_id: str) -> JSONResponse:
        job = self._job(video_id)
        refused = domain.check_deletable(job.id, self._phase(job))
        if refused is not None:
            raise ApiError(409, refused)
        self.jobs.pop(job.id, None)
        return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})

    def _job(self, video_id: str) -> Job:
        job = self.jobs.get(video_id)
        if job is None:
            raise ApiError(404, domain.not_found(video_id))
        return job

    def _phase(self, job: Job) -> Phase:
        return domain.phase_at(self._clock.monotonic() - job.started, self._timeline)


def build_app(
    settings: SimulatorSettings,
    *,
    clock: Clock | None = None,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    cache: AssetCache | None = None,
) -> FastAPI:
    """The simulator's ASGI app. Tests pass a fake clock; the simulator is on `app.state`."""
    simulator = Simulator(
        settings,
        clock or SystemClock(),
        random_bytes,
        cache or AssetCache(fps=settings.fps, asset_dir=settings.asset_dir),
    )
    app = FastAPI(title="clipline Sora 2 simulator", version="1")
    app.state.simulator = simulator
    for path in ("/healthz", "/v1/healthz"):
        app.add_api_route(path, simulator.healthz, methods=["GET"])
    app.add_api_route("/control/creates", simulator.list_creates, methods=["GET"])
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(simulator.authenticate)])
    v1.add_api_route("/videos", simulator.create, methods=["POST"])
    v1.add_api_route("/videos/{video_id}", simulator.retrieve, methods=["GET"])
    v1.add_api_route("/videos/{video_id}", simulator.delete, methods=["DELETE"])
    v1.add_api_route("/videos/{video_id}/content", simulator.content, methods=["GET"])
    app.include_router(v1)
    app.add_exception_handler(ApiError, _on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_middleware(RequestIdMiddleware)
    return app


async def _on_api_error(_: Request, exc: ApiError) -> Response:
    return JSONResponse(envelope(exc.error), status_code=exc.status)


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code in (404, 405):
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(exc.detail)
    return JSONResponse(
        envelope(Invalid(message)), status_code=exc.status_code, headers=exc.headers
    )


async def _on_validation_error(_: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    location = first.get("loc", ())
    param = str(location[-1]) if location else None
    return JSONResponse(envelope(Invalid(str(first.get("msg", "Invalid request.")), param)), 400)


async def _read_create_body(request: Request) -> tuple[dict[str, object] | Invalid, BodyKind]:
    """The create parameters from a JSON object or a (multipart or urlencoded) form."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            async with request.form(max_part_size=MAX_FIELD_BYTES) as form:
                fields = [(name, await _form_value(value)) for name, value in form.multi_items()]
        except MultiPartException as exc:
            return Invalid(f"Could not parse the multipart form: {exc.message}"), "form"
        return domain.fold_form(fields), "form"
    if media and media != "application/json" and not media.endswith("+json"):
        return Invalid(UNSUPPORTED_MEDIA.format(media)), "json"
    raw = await request.body()
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return Invalid(JSON_UNPARSABLE), "json"
    if not isinstance(parsed, dict):
        return Invalid("Invalid request body: expected a JSON object."), "json"
    return parsed, "json"


async def _form_value(value: str | UploadFile) -> object:
    if isinstance(value, str):
        return value
    return sniff_image(await value.read())


def _video_json(job: Job, phase: Phase) -> dict[str, object]:
    """The full 13-key Video object (reference §2.1): absent values are null, never omitted."""
    done = phase.status == "completed"
    return {
        "id": job.id,
        "object": "video",
        "model": job.request.model,
        "status": phase.status,
        "progress": phase.progress,
        "created_at": job.created_at,
        "completed_at": job.completed_at if done else None,
        "expires_at": domain.expires_at(job.completed_at) if done else None,
        "prompt": job.request.prompt,
        "size": job.request.size,
        "seconds": job.request.seconds,
        "remixed_from_video_id": None,
        "error": None,
    }


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_BYTES):
        yield bytes(view[start : start + CHUNK_BYTES])


class RequestIdMiddleware:
    """Adds `x-request-id` to every response, the 500s it writes for unhandled errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(16)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append("x-request-id", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            error = Invalid(
                "The server had an error while processing your request.", type="server_error"
            )
            await JSONResponse(envelope(error), status_code=500)(scope, receive, send_with_id)

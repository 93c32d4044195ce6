"""Request validation and idempotency decisions. Pure: no I/O, no clock, no logging."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.contracts.ids import is_valid_tenant
from shared.contracts.requests import (
    CALLBACK_URL_MAX_CHARS,
    KEY_MAX_CHARS,
    PROMPT_MAX_CHARS,
    JobRequestV1,
    Kind,
    parse_request,
)
from shared.registry import ProviderSpec

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Image:
    """A decoded input_reference, not yet checked for format and dimensions."""

    declared_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the image bytes really are (read by an adapter)."""

    format: str  # Pillow's name: JPEG, PNG, WEBP, ...
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Spec:
    model: str
    size: str
    seconds: int
    prompt: str
    image: Image | None = None
    priority: str = "normal"
    kind: Kind = "generate"
    source_job_id: str | None = None
    total_seconds: int | None = None
    extensions: int = 0


@dataclass(frozen=True, slots=True)
class Valid:
    tenant: str
    spec: Spec
    idempotency_key: str | None
    callback_url: str | None = None

    @property
    def fingerprint(self) -> str:
        """Normalised request text: equal for retries, different for a reused key."""
        s = self.spec
        image = hashlib.sha256(s.image.data).hexdigest() if s.image else None
        fields = [self.tenant, s.model, s.size, s.seconds, s.prompt, image]
        if s.priority != "normal":  # absent before priorities existed: old fingerprints hold
            fields.append(s.priority)
        if s.kind != "generate":  # absent before kinds existed: old fingerprints hold
            fields += ["kind", s.kind, s.source_job_id]
        if self.callback_url is not None:  # likewise: absent before callbacks existed
            fields += ["callback_url", self.callback_url]
        return json.dumps(fields)


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str  # machine-readable: invalid_request, unknown_model, ...
    detail: str  # one human sentence
    field: str | None = None


def _check_fields(body: Mapping[str, Any], refused: Mapping[str, str]) -> Invalid | None:
    unknown = sorted(field for field, kind in refused.items() if kind == "extra_forbidden")
    if unknown:
        return Invalid("invalid_request", f"unknown field(s): {', '.join(unknown)}", unknown[0])
    if "schema_version" in refused:
        version = body["schema_version"]
        return Invalid("unsupported_version", f"schema_version {version!r} is not supported (1)")
    if "callback_url" in refused:
        return Invalid(
            "invalid_callback_url",
            f"callback_url must be a string of at most {CALLBACK_URL_MAX_CHARS} chars",
            "callback_url",
        )
    if "idempotency_key" in refused:
        return Invalid(
            "invalid_request",
            f"idempotency_key must be a string of 1..{KEY_MAX_CHARS} chars",
            "idempotency_key",
        )
    return None


def tenant_problem(tenant: str) -> str:
    """The one sentence every refusal of an invalid tenant says."""
    return f"tenant {tenant!r} must match [a-z0-9][a-z0-9_-]{{0,62}}"


def _check_tenant(body: Mapping[str, Any], tenant: str) -> Invalid | None:
    if not is_valid_tenant(tenant):
        return Invalid("invalid_tenant", tenant_problem(tenant))
    named = body.get("tenant")
    if named is not None and named != tenant:
        return Invalid("invalid_tenant", f"body names tenant {named!r} but was sent as {tenant!r}")
    return None


def _check_prompt(body: Mapping[str, Any], refused: Mapping[str, str]) -> Invalid | None:
    if "prompt" not in refused:
        return None
    prompt = body.get("prompt")
    if refused["prompt"] == "string_too_long" and isinstance(prompt, str) and prompt.strip():
        return Invalid("invalid_request", f"prompt exceeds {PROMPT_MAX_CHARS} chars", "prompt")
    return Invalid("invalid_request", "prompt is required and must be non-empty", "prompt")


def _check_spec(
    body: Mapping[str, Any],
    request: JobRequestV1,
    refused: Mapping[str, str],
    provider: ProviderSpec,
) -> Spec | Invalid:
    """The registry's checks, then the contract's remaining ones, in the order clients know.
    A refused field's value in `request` is its default: `body` says what was sent."""
    model = body.get("model", request.model)
    spec = None if "model" in refused else provider.model(request.model)
    if spec is None:
        known = ", ".join(sorted(provider.models))
        return Invalid(
            "unknown_model", f"model {model!r} is not one of {provider.name}'s: {known}", "model"
        )
    if "size" in refused or request.size not in spec.sizes:
        allowed = ", ".join(sorted(spec.sizes))
        size = body.get("size", request.size)
        return Invalid("invalid_size", f"size {size!r} is not valid for {model}: {allowed}", "size")
    if "seconds" in refused or request.seconds not in spec.seconds:
        allowed = ", ".join(str(s) for s in sorted(spec.seconds))
        shown = body.get("seconds")
        return Invalid(
            "invalid_seconds", f"seconds {shown!r} is not valid for {model}: {allowed}", "seconds"
        )
    if "priority" in refused:
        priority = body["priority"]
        return Invalid(
            "invalid_priority", f"priority {priority!r} is not one of high, normal, low", "priority"
        )
    image = parse_image(body.get("input_reference"))
    if isinstance(image, Invalid):
        return image
    return Spec(model=request.model, size=request.size, seconds=request.seconds,
                prompt=request.prompt, image=image, priority=request.priority)  # fmt: skip


def parse_image(value: Any) -> Image | Invalid | None:
    """An input_reference is a base64 data URL of a JPEG, PNG or WebP image."""
    if value is None:
        return None
    field = "input_reference"
    match = _DATA_URL.match(value) if isinstance(value, str) else None
    if match is None:
        return Invalid("invalid_image", "input_reference must be a base64 data URL", field)
    mime = match["mime"].lower()
    if mime not in IMAGE_TYPES:
        allowed = ", ".join(sorted(IMAGE_TYPES))
        return Invalid(
            "invalid_image", f"input_reference type {mime} is not one of {allowed}", field
        )
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        return Invalid("invalid_image", "input_reference is not valid base64", field)
    if not data or len(data) > MAX_IMAGE_BYTES:
        return Invalid(
            "invalid_image", f"input_reference must be 1..{MAX_IMAGE_BYTES} bytes", field
        )
    return Image(mime, data)


def check_image(image: Image, facts: ImageFacts | None, size: str) -> Invalid | None:
    """The image must really be of its declared type and exactly `size` (it is the first frame)."""
    field = "input_reference"
    if facts is None or IMAGE_FORMATS.get(facts.format) != image.declared_type:
        return Invalid(
            "invalid_image", f"input_reference is not a valid {image.declared_type}", field
        )
    if f"{facts.width}x{facts.height}" != size:
        return Invalid(
            "invalid_image",
            f"input_reference is {facts.width}x{facts.height}; it must match size {size}",
            field,
        )
    return None


def validate(body: Any, tenant: str, provider: ProviderSpec) -> Valid | Derived | Invalid:
    """Decide whether a decoded request body is a job clipline can take, and normalise it.

    The JobRequestV1 contract says what a request is (fields, types, limits, defaults); this
    explains its refusals in clipline's reasons and adds the registry's checks. A remix, edit
    or extension is Derived: derive() decides it once its source job is read."""
    if isinstance(body, Invalid):  # it did not even decode
        return body
    if not isinstance(body, Mapping):
        return Invalid("invalid_request", "request body must be a JSON object")
    parsed = parse_request(body)
    refused = {} if isinstance(parsed, JobRequestV1) else parsed
    problem = (
        _check_fields(body, refused) or _check_tenant(body, tenant) or _check_prompt(body, refused)
    )
    if problem is not None:
        return problem
    if refused:  # only fields with defaults are left: read the rest to explain in order
        parsed = parse_request({k: v for k, v in body.items() if k not in refused})
    if not isinstance(parsed, JobRequestV1):  # a refusal the contract gained and this missed
        field, kind = sorted(parsed.items())[0]
        return Invalid("invalid_request", f"{field} is not valid ({kind})", field)
    if parsed.kind != "generate" or parsed.source_job_id is not None or _kind_refused(refused):
        return _check_derived(body, parsed, refused, tenant)
    spec = _check_spec(body, parsed, refused, provider)
    if isinstance(spec, Invalid):
        return spec
    return Valid(
        tenant=tenant, spec=spec, idempotency_key=parsed.idempotency_key,
        callback_url=parsed.callback_url,
    )  # fmt: skip


# -- remix, edit, extend -------------------------------------------------------------------------

EXTENSION_SECONDS = (4, 8, 12, 16, 20)
"""What one extension may add (reference §7.3)."""
MAX_EXTENSIONS = 6
MAX_STITCHED_SECONDS = 120
"""A video may be extended at most 6 times, to at most 120 s in all (reference §7.3)."""
INHERITED = ("model", "size", "seconds")
_DONE = {"remix": "remixed", "edit": "edited", "extend": "extended"}


def _kind_refused(refused: Mapping[str, str]) -> bool:
    return "kind" in refused or "source_job_id" in refused


@dataclass(frozen=True, slots=True)
class Derived:
    """A valid remix, edit or extension request whose source job is still to be looked up:
    `named` holds the model, size and seconds the body named (a remix or edit inherits all
    three, an extension model and size; `seconds` is the segment it adds)."""

    tenant: str
    kind: Kind
    source_job_id: str
    prompt: str
    priority: str
    idempotency_key: str | None
    named: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Source:
    """What a derived job needs of its source job (read from its record by the use case)."""

    job_id: str
    status: str
    model: str
    size: str
    video_seconds: int  # the length of its video (an extension's stitched total)
    extensions: int


def _check_derived(
    body: Mapping[str, Any], request: JobRequestV1, refused: Mapping[str, str], tenant: str
) -> Derived | Invalid:
    """A remix, edit or extension request, checked as far as it can be without its source."""
    if "kind" in refused:
        return Invalid(
            "invalid_request", f"kind {body['kind']!r} is not one of generate, remix, edit, extend",
            "kind",
        )  # fmt: skip
    if "source_job_id" in refused:
        return Invalid("invalid_request", "source_job_id must be a job id", "source_job_id")
    if request.kind == "generate":
        return Invalid(
            "invalid_request",
            "source_job_id is only for kind remix, edit or extend",
            "source_job_id",
        )
    if request.source_job_id is None:
        return Invalid(
            "invalid_request", f"kind {request.kind} needs source_job_id", "source_job_id"
        )
    if request.input_reference is not None or "input_reference" in refused:
        return Invalid(
            "invalid_request",
            f"input_reference is only for generate, not {request.kind}",
            "input_reference",
        )
    if "priority" in refused:
        priority = body["priority"]
        return Invalid(
            "invalid_priority", f"priority {priority!r} is not one of high, normal, low", "priority"
        )
    for name in INHERITED:
        if name in refused:
            return Invalid(
                f"invalid_{name}" if name != "model" else "unknown_model",
                f"{name} {body.get(name)!r} is not valid",
                name,
            )
    if request.kind == "extend" and "seconds" not in body:
        added = ", ".join(str(s) for s in EXTENSION_SECONDS)
        return Invalid(
            "invalid_seconds", f"an extension needs seconds: the segment it adds ({added})",
            "seconds",
        )  # fmt: skip
    named = {name: getattr(request, name) for name in INHERITED if name in body}
    return Derived(
        tenant=tenant, kind=request.kind, source_job_id=request.source_job_id,
        prompt=request.prompt, priority=request.priority,
        idempotency_key=request.idempotency_key, named=named,
    )  # fmt: skip


def derive(request: Derived, source: Source | None) -> Valid | Invalid:
    """The job a remix, edit or extension request makes of its source (None: the tenant has no
    such job). The source must be completed; model and size are its own (a request naming
    others is refused), and so is the length of a remix or edit; an extension adds 4..20 s,
    at most 6 times in a chain and to at most 120 s in all."""
    field = "source_job_id"
    if source is None:
        return Invalid(
            "source_not_found", f"no job {request.source_job_id!r} for this tenant", field
        )
    if source.status != "completed":
        return Invalid(
            "source_not_completed",
            f"job {source.job_id} is {source.status}: only a completed job can be "
            f"{_DONE[request.kind]}",
            field,
        )
    inherited = {"model": source.model, "size": source.size, "seconds": source.video_seconds}
    for name, value in request.named.items():
        if request.kind == "extend" and name == "seconds":
            continue
        if value != inherited[name]:
            return Invalid(
                "invalid_request",
                f"{name} {value!r} differs from the source job's ({inherited[name]!r}): "
                f"a {request.kind} keeps its source's {name}; omit it",
                name,
            )
    seconds, total, extensions = source.video_seconds, None, source.extensions
    if request.kind == "extend":
        seconds = request.named["seconds"]
        if seconds not in EXTENSION_SECONDS:
            added = ", ".join(str(s) for s in EXTENSION_SECONDS)
            return Invalid(
                "invalid_seconds", f"an extension adds {added} seconds, not {seconds!r}", "seconds"
            )
        if source.extensions >= MAX_EXTENSIONS:
            return Invalid(
                "extension_limit",
                f"job {source.job_id} is already extended {source.extensions} times "
                f"(at most {MAX_EXTENSIONS})",
                field,
            )
        total, extensions = source.video_seconds + seconds, source.extensions + 1
        if total > MAX_STITCHED_SECONDS:
            return Invalid(
                "extension_limit",
                f"the extended video would be {total} s long (at most {MAX_STITCHED_SECONDS})",
                "seconds",
            )
    spec = Spec(
        model=source.model, size=source.size, seconds=seconds, prompt=request.prompt,
        priority=request.priority, kind=request.kind, source_job_id=source.job_id,
        total_seconds=total, extensions=extensions,
    )  # fmt: skip
    return Valid(tenant=request.tenant, spec=spec, idempotency_key=request.idempotency_key)


def decode(raw: bytes) -> Any:
    """JSON-decode a payload. Bytes that are not JSON, or nested past the parser's recursion
    limit (a nesting bomb), decode to an Invalid saying which, that validate() passes on."""
    try:
        return json.loads(raw)
    except RecursionError:
        return Invalid("invalid_request", "request body is nested too deeply to be a job request")
    except (ValueError, UnicodeDecodeError) as exc:
        return Invalid("invalid_request", f"request body is not JSON: {exc}"[:300])


@dataclass(frozen=True, slots=True)
class RequestSubject:
    """Where a request was published: clipline.job.requested.<version>.<tenant>[.<more>]."""

    version: str
    tenant: str


def parse_request_subject(subject: str, prefix: str) -> RequestSubject | Invalid:
    """The version and tenant tokens of a request subject, or why it cannot be taken."""
    inside = subject.startswith(prefix + ".")
    tokens = subject.removeprefix(prefix + ".").split(".") if inside else []
    if not tokens or not tokens[0]:
        return Invalid("invalid_request", f"{subject!r} is not a request subject")
    if tokens[0] != "v1":
        return Invalid(
            "unsupported_version", f"request version {tokens[0]!r} is not supported (v1)"
        )
    if len(tokens) < 2 or not is_valid_tenant(tokens[1]):
        named = tokens[1] if len(tokens) > 1 else None
        return Invalid(
            "invalid_tenant",
            f"publish to {prefix}.v1.<tenant>; "
            + ("no tenant token" if named is None else f"tenant {named!r} is not valid"),
        )
    return RequestSubject(tokens[0], tokens[1])


def tenant_token(subject: str, prefix: str) -> str:
    """The subject's tenant token when it is a valid tenant (even in a request refused for its
    version, so the refusal goes where that tenant listens), else ''."""
    tokens = subject.removeprefix(prefix + ".").split(".")
    return tokens[1] if len(tokens) > 1 and is_valid_tenant(tokens[1]) else ""


@dataclass(frozen=True, slots=True)
class New:
    """First sight of this job: record it."""


@dataclass(frozen=True, slots=True)
class Repeat:
    """The same request again (a retry): answer with the existing job."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """The idempotency key was reused for a different request."""

    detail: str


def dedupe(existing_fingerprint: str | None, fingerprint: str) -> New | Repeat | Conflict:
    if existing_fingerprint is None:
        return New()
    if existing_fingerprint == fingerprint:
        return Repeat()
    return Conflict("idempotency_key was already used for a different request")

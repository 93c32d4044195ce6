"""Process logging: text or JSON lines (with trace, span and job ids), optionally size-capped."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["text", "json"]
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("clipline_job", default=None)
WAITS = logging.getLogger("clipline.waits")
"""One DEBUG line per timing decision (a backoff, a rate wait, a reconcile list), for
benchmarks (bench/faults.py): off unless CLIPLINE_LOG_DEBUG names it."""


def note_wait(why: str, seconds: float = 0.0, asked: float | None = None) -> None:
    """Record a timing decision of the job in context: `why` (a short token), the `seconds` it
    costs the job, and what the upstream `asked` for (a Retry-After), if anything. Costs one
    level check unless CLIPLINE_LOG_DEBUG=clipline.waits."""
    if WAITS.isEnabledFor(logging.DEBUG):
        said = "-" if asked is None else f"{asked:.3f}"
        WAITS.debug("job=%s why=%s seconds=%.3f asked=%s", _job_id.get(), why, seconds, said)


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Every log line written inside this block names `job_id` (JSON format)."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, trace_id, span_id, job_id."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        job_id = _job_id.get()
        if job_id:
            out["job_id"] = job_id
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Root logging for a process. With CLIPLINE_LOG_FILE set, lines go to that file, rotated at
    CLIPLINE_LOG_MAX_BYTES (10 MiB) keeping CLIPLINE_LOG_BACKUPS (3) old files; else stderr."""
    handler: logging.Handler
    path = os.environ.get("CLIPLINE_LOG_FILE", "").strip()
    if path:
        handler = logging.handlers.RotatingFileHandler(
            path,
            maxBytes=_env_int("CLIPLINE_LOG_MAX_BYTES", DEFAULT_MAX_BYTES),
            backupCount=_env_int("CLIPLINE_LOG_BACKUPS", DEFAULT_BACKUPS),
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per upstream request is per-message detail: DEBUG, unless DEBUG is asked for.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level.upper() == "DEBUG" else "WARNING")
    # CLIPLINE_LOG_DEBUG: loggers (comma-separated) at DEBUG whatever the level, e.g. the
    # benchmarks' clipline.waits.
    for name in os.environ.get("CLIPLINE_LOG_DEBUG", "").split(","):
        if name.strip():
            logging.getLogger(name.strip()).setLevel(logging.DEBUG)

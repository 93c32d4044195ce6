"""Generated documents: docs/lifecycle.md, docs/asyncapi.json and docs/metrics.md (`make
schemas` rewrites them; tests fail when a committed copy drifts from the code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI

from services.intake.handlers import build_router as intake
from services.poller.app import build_router as poller
from services.pricing_guard.app import build_router as pricing_guard
from services.storage.app import build_router as storage
from services.submitter.app import build_router as submitter
from shared.contracts.lifecycle import lifecycle_markdown
from shared.contracts.requests import REQUESTS_ROOT, JobRequestV1
from shared.messaging import ServiceRouter
from shared.metrics import catalogue_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"
TITLE = "clipline events"
VERSION = "1"


def routers() -> list[ServiceRouter]:
    """Every service's router, as its app builds it (described, never connected)."""
    return [intake(), pricing_guard(), submitter(8), poller(), storage(8)]


def asyncapi_document() -> str:
    """The AsyncAPI 3.0 document of every service's subscribers and declared publishers."""
    broker = NatsBroker("nats://nats:4222")  # never connected: only described
    for router in routers():
        broker.include_router(router)
    spec = AsyncAPI(
        broker,
        title=TITLE,
        version=VERSION,
        description="Job requests and job events of clipline on the NATS JetStream stream "
        "CLIPLINE_JOBS. Event subjects: clipline.job.<kind>.v1.<tenant>.<job_id>.",
        schema_version="3.0.0",
    ).to_specification()
    return (
        json.dumps(with_request_payload(json.loads(spec.to_json())), indent=2, sort_keys=True)
        + "\n"
    )


def with_request_payload(doc: dict[str, Any]) -> dict[str, Any]:
    """intake reads a request's raw bytes (every failure to decode is a rejection with a
    reason), so FastStream sees no payload type: document JobRequestV1, what it accepts."""
    schema = JobRequestV1.model_json_schema(ref_template="#/components/schemas/{model}")
    doc["components"]["schemas"]["JobRequestV1"] = schema
    for name, message in doc["components"]["messages"].items():
        if name.startswith(f"intake consumes {REQUESTS_ROOT}."):
            message["payload"] = {"$ref": "#/components/schemas/JobRequestV1"}
    if not any(
        m["payload"] == {"$ref": "#/components/schemas/EmptyPayload"}
        for m in doc["components"]["messages"].values()
    ):
        doc["components"]["schemas"].pop("EmptyPayload", None)
    return doc


def rendered() -> dict[Path, str]:
    return {
        DOCS / "lifecycle.md": lifecycle_markdown(),
        DOCS / "asyncapi.json": asyncapi_document(),
        DOCS / "metrics.md": catalogue_markdown(),
    }


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text)


if __name__ == "__main__":
    main()

"""One job's trace on the shared e2e stack (issue 20), as its services exported it over OTLP:
spans from all five services under one trace id, every parent in the trace, the upstream calls
and the S3 upload as short client spans with their attributes; and no secret (the tenant's API
key, the webhook secret, the S3 secret) in any span, log or metric of the run."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipline import s3_key, webhook_secret
from clipline.stack import StackState
from tests.e2e.harness import as_tenant
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e
SERVICES = {"intake", "pricing_guard", "submitter", "poller", "storage"}
DEADLINE = 90.0
EXPORT_SECONDS = 30.0
"""How long the services may take to export a finished job's spans (batches every 200 ms)."""


def finished_job(stack: StackState, tenant: str) -> dict[str, Any]:
    """Run one job to its end; its record (with its trace id)."""
    auth = as_tenant(stack, tenant)
    body = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a lantern at dusk"}
    timeout = httpx.Timeout(10, read=DEADLINE)
    with httpx.Client(base_url=stack.intake_url, timeout=timeout, headers=auth) as http:
        posted = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["job_id"]
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as events:  # ends with the job
            assert events.status_code == 200
            for _ in events.iter_lines():
                pass
        record = http.get(f"/v1/jobs/{job_id}").json()
    assert record["status"] == "completed", record
    return dict(record)


def complete(spans: list[ReceivedSpan]) -> bool:
    """All five services, the S3 upload and the asset announcement in, and no parent missing."""
    ids = {s.span_id for s in spans}
    return (
        {s.service for s in spans} >= SERVICES
        and any(s.name == "S3.PutObject" for s in spans)
        and all(not s.parent_id or s.parent_id in ids for s in spans)
    )


@pytest.fixture(scope="module")
def job_trace(
    surfaces_stack: StackState, otlp_receiver: OtlpReceiver
) -> tuple[dict[str, Any], list[ReceivedSpan]]:
    record = finished_job(surfaces_stack, f"trace{uuid.uuid4().hex[:6]}")
    trace_id = record.get("trace_id")
    assert trace_id, record
    return record, otlp_receiver.wait_for(trace_id, complete, EXPORT_SECONDS)


def test_one_jobs_trace_spans_all_five_services_with_parents_in_the_trace(
    job_trace: tuple[dict[str, Any], list[ReceivedSpan]],
) -> None:
    record, spans = job_trace
    assert {s.service for s in spans} >= SERVICES, sorted({s.service for s in spans})
    assert {s.trace_id for s in spans} == {record["trace_id"]}
    ids = {s.span_id for s in spans}
    orphans = [(s.service, s.name) for s in spans if s.parent_id and s.parent_id not in ids]
    assert orphans == []
    roots = [s for s in spans if not s.parent_id]
    assert len(roots) == 1, [(s.service, s.name) for s in roots]
    assert roots[0].service == "intake"
    tagged = [s for s in spans if s.attributes.get("clipline.job.id") == record["job_id"]]
    assert tagged, "no span names the job"


def test_no_span_stays_open_while_the_upstream_generates(
    job_trace: tuple[dict[str, Any], list[ReceivedSpan]],
) -> None:
    """Waiting for the upstream is a delayed nak (or a webhook), not an open span: every span
    is shorter than the time from `submitted` to `generated`."""
    record, spans = job_trace
    history = record["history"]
    generating = datetime.fromisoformat(history["generated"]) - datetime.fromisoformat(
        history["submitted"]
    )
    longest = max(spans, key=lambda s: s.seconds)
    assert longest.seconds < generating.total_seconds(), (longest.service, longest.name)


def test_the_upstream_calls_are_client_spans_with_http_semantics(
    job_trace: tuple[dict[str, Any], list[ReceivedSpan]],
) -> None:
    record, spans = job_trace
    upstream = [s for s in spans if "url.template" in s.attributes]
    by_name = {(s.service, s.name) for s in upstream}
    assert ("submitter", "POST /v1/videos") in by_name, by_name
    assert ("storage", "GET /v1/videos/{video_id}/content") in by_name, by_name
    for span in upstream:
        assert span.kind == "client"
        assert span.attributes["http.request.method"] == span.name.split(" ")[0]
        assert span.attributes["server.address"] == "127.0.0.1"
        assert isinstance(span.attributes["http.response.status_code"], int)
        assert record["upstream_id"] not in span.name  # the template, never an id
        assert "url.full" not in span.attributes
    create = next(s for s in upstream if s.name == "POST /v1/videos")
    assert create.attributes["http.response.status_code"] == 200
    # the poller looked at the video (a poll or a webhook's look), in the same trace
    assert any(s.service == "poller" and s.name == "GET /v1/videos/{video_id}" for s in upstream)


def test_the_s3_upload_is_a_client_span_with_bucket_and_key(
    job_trace: tuple[dict[str, Any], list[ReceivedSpan]],
) -> None:
    record, spans = job_trace
    puts = [s for s in spans if s.name == "S3.PutObject"]
    assert puts
    for put in puts:
        assert put.service == "storage"
        assert put.kind == "client"
        assert put.attributes["rpc.system"] == "aws-api"
        assert put.attributes["rpc.method"] == "PutObject"
        assert put.attributes["aws.s3.bucket"]
        assert record["job_id"] in put.attributes["aws.s3.key"]
        assert put.attributes["clipline.s3.bytes"] > 0
    keys = {put.attributes["aws.s3.key"] for put in puts}
    assert keys <= {asset["key"] for asset in record["assets"]}


def secrets_of(home: Path, tenant_key: str) -> dict[str, str]:
    s3 = s3_key.read(home)
    hook = webhook_secret.read(home)
    assert s3 is not None
    assert hook is not None
    found = {"API key": tenant_key, "S3 secret key": s3[1], "webhook secret": hook}
    # the webhook secret's key material too (whsec_ + base64): a log may hold either part
    found["webhook key"] = hook.removeprefix("whsec_")
    return found


def scraped_metrics(stack: StackState) -> str:
    """Every process's /metrics (the services' and the simulator's), as Prometheus reads them."""
    urls = [p.metrics_url for p in stack.processes if p.metrics_url]
    assert len(urls) == 6, urls  # the five services and the simulator
    return "\n".join(httpx.get(url, timeout=10).text for url in urls)


def test_no_secret_in_any_span_log_or_metric_of_the_run(
    surfaces_stack: StackState, otlp_receiver: OtlpReceiver, job_trace: Any
) -> None:
    home = Path(surfaces_stack.home)
    key = as_tenant(surfaces_stack, "acme")["Authorization"].removeprefix("Bearer ")
    finished_job(surfaces_stack, "acme")  # a job of the tenant whose key is looked for
    with otlp_receiver.changed:
        spans = list(otlp_receiver.spans)
    assert spans
    exported = json.dumps([[s.name, s.attributes, s.events] for s in spans], default=str)
    logs = "\n".join(
        p.read_text(errors="replace") for p in sorted((home / "logs").glob("*")) if p.is_file()
    )
    assert logs
    metrics = scraped_metrics(surfaces_stack)
    # the run is in them: the tenant's job moved and was paid for
    assert "clipline_job_transitions_total{" in metrics
    assert 'tenant="acme"' in metrics
    for what, secret in secrets_of(home, key).items():
        assert len(secret) >= 16, what
        assert secret not in exported, f"{what} in a span"
        assert secret not in logs, f"{what} in a log"
        assert secret not in metrics, f"{what} in a metric"

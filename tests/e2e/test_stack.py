"""End to end: the embedded stack as separate processes, driven as outside systems would."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest
from minio import Minio

from clipline.servers import pid_alive
from clipline.stack import LOCAL_API_KEY, StackOptions, StackState, down, up
from shared.contracts.ids import job_id_for
from tests.e2e.harness import as_tenant
from tests.images import data_url, image_bytes
from tests.otlp_sink import OtlpSink, start_sink

pytestmark = pytest.mark.e2e
SERVICES = {"intake", "pricing_guard", "submitter", "poller", "storage"}
DEADLINE = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackState, OtlpSink]]:
    sink, server = start_sink()
    overrides = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    home = tmp_path_factory.mktemp("stack")
    try:
        state = up(home, StackOptions(generation_seconds=1.5, poll_after_ms=200))
        yield state, sink
    finally:
        survivors = down(home)
        server.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        assert not survivors, survivors


def s3(state: StackState) -> Minio:
    return Minio(
        state.s3_endpoint,
        access_key=state.s3_access_key,
        secret_key=state.s3_secret_key,
        secure=False,
    )


async def test_raw_nats_request_completes_on_tenant_filtered_subscription(
    stack: tuple[StackState, OtlpSink], tmp_path: Path
) -> None:
    """Two outside systems, each with its tenant's creds file (made with the CLI) and plain
    nats-py: each publishes its request and follows its own events to `completed`."""
    state, _ = stack
    mine, other = f"acme{uuid.uuid4().hex[:6]}", f"other{uuid.uuid4().hex[:6]}"
    creds: dict[str, Path] = {}
    for tenant in (mine, other):
        added = subprocess.run(
            [sys.executable, "-m", "clipline.cli", "--home", state.home, "tenants", "add", tenant],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        creds[tenant] = tmp_path / f"{tenant}.creds"
        wrote = subprocess.run(
            [sys.executable, "-m", "clipline.cli", "--home", state.home, "nats-creds",
             "--tenant", tenant, "-o", str(creds[tenant])],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert wrote.returncode == 0, wrote.stderr
        assert creds[tenant].stat().st_mode & 0o777 == 0o600
    # Only plain nats-py, a creds file and JSON below: what an outside system has.
    clients = {
        t: await nats.connect(state.nats_url, user_credentials=str(c)) for t, c in creds.items()
    }
    try:
        done: dict[str, asyncio.Queue[Any]] = {t: asyncio.Queue() for t in creds}
        for tenant, nc in clients.items():

            async def on_done(msg: Any, tenant: str = tenant) -> None:
                done[tenant].put_nowait(msg)

            await nc.subscribe(f"clipline.job.completed.v1.{tenant}.*", cb=on_done)
        for tenant, prompt in ((other, "a red kite"), (mine, "a paper boat in the rain")):
            body = {"model": "sora-2", "size": "1280x720", "seconds": "4", "prompt": prompt}
            ack = (
                await clients[tenant]
                .jetstream()
                .publish(
                    f"clipline.job.requested.v1.{tenant}",
                    json.dumps(body).encode(),
                    headers={"Nats-Msg-Id": uuid.uuid4().hex},
                )
            )
            assert ack.stream == "CLIPLINE_REQUESTS"  # requests have a stream of their own
        msg = await asyncio.wait_for(done[mine].get(), DEADLINE)
        theirs = await asyncio.wait_for(done[other].get(), DEADLINE)  # the other one's too
        assert json.loads(theirs.data)["tenant"] == other
    finally:
        for nc in clients.values():
            await nc.close()
    event = json.loads(msg.data)
    assert msg.subject == f"clipline.job.completed.v1.{mine}.{event['job_id']}"
    assert event["tenant"] == mine
    assert event["cost_micros"] == 400_000  # sora-2 720p: $0.10/s x 4 s
    assert event["timings"]["total_seconds"] > 0
    assets = {a["variant"]: a for a in event["assets"]}
    assert set(assets) == {"video", "thumbnail", "spritesheet"}
    assert assets["video"]["content_type"] == "video/mp4"
    accepted = datetime.fromisoformat(event["timings"]["accepted_at"]).astimezone(UTC)
    prefix = f"{mine}/{accepted:%Y/%m/%d}/{event['job_id']}/"
    assert assets["video"]["key"] == prefix + "video.mp4"
    client = s3(state)
    for asset in assets.values():
        assert asset["key"].startswith(prefix)
        obj = client.get_object(asset["bucket"], asset["key"])
        try:
            data = obj.read()
            assert obj.headers["x-amz-meta-job-id"] == event["job_id"]
            assert obj.headers["x-amz-meta-tenant"] == mine
            assert obj.headers["x-amz-meta-cost-micros"] == "400000"
        finally:
            obj.close()
            obj.release_conn()
        assert len(data) == asset["size_bytes"] > 0
        assert hashlib.sha256(data).hexdigest() == asset["sha256"]
        presigned = httpx.get(asset["url"], timeout=10)  # no credentials: the URL is one
        assert presigned.status_code == 200
        assert hashlib.sha256(presigned.content).hexdigest() == asset["sha256"]
    assert done[mine].empty()  # one completion each, on its own subscription


def test_cli_submit_one_trace_across_all_services(
    stack: tuple[StackState, OtlpSink],
) -> None:
    state, sink = stack
    out = subprocess.run(
        [sys.executable, "-m", "clipline.cli", "--home", state.home, "submit", "--wait",
         "--verify", "--prompt", "a lighthouse in a storm", "--seconds", "4",
         "--size", "1280x720", "--timeout", str(DEADLINE)],
        capture_output=True, text=True, timeout=DEADLINE + 30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "cost: $0.40 (400000 micro-dollars)" in out.stdout
    assert "verified: h264 1280x720, 4.00s" in out.stdout
    match = re.search(r"trace id: ([0-9a-f]{32})", out.stdout)
    assert match, out.stdout
    trace_id = match.group(1)
    seen = sink.wait_for_services(trace_id, SERVICES, timeout=30)
    assert seen >= SERVICES, f"services in trace {trace_id}: {seen}"
    upstream_calls = {s.name for s in sink.spans if s.trace_id == trace_id}
    assert any(name.startswith("POST") for name in upstream_calls), upstream_calls


async def follow(
    state: StackState, tenant: str, key: str, post: Callable[[], httpx.Response]
) -> tuple[httpx.Response, dict[str, Any]]:
    """Subscribe to a job's events (its id follows from tenant and key), run `post`, and return
    the response and the job's terminal event."""
    job_id = job_id_for(tenant, key)
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        ended: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_event(msg: Any) -> None:
            if msg.subject.split(".")[2] in ("completed", "failed", "rejected"):
                ended.put_nowait(json.loads(msg.data) | {"kind": msg.subject.split(".")[2]})

        await nc.subscribe(f"clipline.job.*.v1.{tenant}.{job_id}", cb=on_event)
        response = await asyncio.to_thread(post)
        return response, await asyncio.wait_for(ended.get(), DEADLINE)
    finally:
        await nc.close()


async def test_rejections_carry_a_reason(stack: tuple[StackState, OtlpSink]) -> None:
    state, _ = stack
    with httpx.Client(
        base_url=state.intake_url, timeout=10, headers=as_tenant(state, "default")
    ) as http:
        bad = http.post("/v1/jobs", json={"prompt": "x", "seconds": 5})
        assert bad.status_code == 422
        assert bad.json()["reason"] == "invalid_seconds"
        key = uuid.uuid4().hex
        body = {"model": "sora-2-pro", "size": "1920x1080", "seconds": 4, "prompt": "p"}
        headers = {**as_tenant(state, "acme"), "Idempotency-Key": key}
        created, event = await follow(
            state, "acme", key, lambda: http.post("/v1/jobs", json=body, headers=headers)
        )
        assert created.status_code == 202
        record = http.get(f"/v1/jobs/{event['job_id']}", headers=as_tenant(state, "acme")).json()
        other = http.get(f"/v1/jobs/{event['job_id']}", headers=as_tenant(state, "zeta"))
        assert other.status_code == 404  # another tenant's job is not found
    assert event["kind"] == "rejected"
    assert (event["reason"], event["stage"]) == ("unpriced", "pricing_guard")
    assert record["status"] == "rejected"
    assert record["cost_micros"] is None


async def test_same_idempotency_key_creates_one_upstream_job(
    stack: tuple[StackState, OtlpSink],
) -> None:
    state, _ = stack
    key = uuid.uuid4().hex
    body = {"model": "sora-2", "size": "720x1280", "seconds": 4, "prompt": "one job only"}
    headers = {"Idempotency-Key": key, **as_tenant(state, "default")}
    with httpx.Client(base_url=state.intake_url, timeout=10) as http:

        def post_three_times() -> httpx.Response:
            answers = [http.post("/v1/jobs", json=body, headers=headers) for _ in range(3)]
            assert len({a.json()["job_id"] for a in answers}) == 1
            return answers[0]

        first, event = await follow(state, "default", key, post_three_times)
        assert event["kind"] == "completed"
        reuse = http.post("/v1/jobs", json={**body, "prompt": "another"}, headers=headers)
        assert reuse.status_code == 409
    job_id = first.json()["job_id"]
    creates = httpx.get(f"{state.simulator_url}/control/creates", timeout=10).json()
    assert len([c for c in creates if c["client_request_id"] == job_id]) == 1


async def test_input_image_travels_to_upstream_as_first_frame(
    stack: tuple[StackState, OtlpSink],
) -> None:
    state, _ = stack
    tenant = f"img{uuid.uuid4().hex[:6]}"
    nc = await nats.connect(state.nats_url, user_credentials=state.nats_creds)
    try:
        ended: asyncio.Queue[Any] = asyncio.Queue()

        async def on_end(msg: Any) -> None:
            ended.put_nowait(msg)

        for kind in ("completed", "rejected", "failed"):
            await nc.subscribe(f"clipline.job.{kind}.v1.{tenant}.*", cb=on_end)
        js = nc.jetstream()
        outcomes = {}
        for key, size in (("fits", "1280x720"), ("wrong", "720x1280")):
            body = {
                "size": size, "seconds": "4", "prompt": "animate this", "idempotency_key": key,
                "input_reference": data_url(image_bytes(1280, 720)),
            }  # fmt: skip
            await js.publish(f"clipline.job.requested.v1.{tenant}", json.dumps(body).encode())
            msg = await asyncio.wait_for(ended.get(), DEADLINE)
            outcomes[key] = (msg.subject.split(".")[2], json.loads(msg.data))
    finally:
        await nc.close()
    kind, event = outcomes["fits"]
    assert kind == "completed", event
    assert {a["variant"] for a in event["assets"]} == {"video", "thumbnail", "spritesheet"}
    kind, event = outcomes["wrong"]
    assert kind == "rejected"
    assert (event["reason"], event["stage"]) == ("invalid_image", "intake")
    assert "must match size 720x1280" in event["detail"]


def test_secrets_stay_out_of_logs_and_spans(stack: tuple[StackState, OtlpSink]) -> None:
    state, sink = stack
    api_keys = [p.read_text() for p in Path(state.home).glob("api-key*")]
    assert api_keys  # `up` made the default tenant's; the tests here made others
    secrets = [LOCAL_API_KEY, state.s3_secret_key, *api_keys]
    assert sink.spans, "no spans exported"
    for span in sink.spans:
        for secret in secrets:
            assert secret not in span.attributes, span
    for proc in state.processes:
        if proc.name in SERVICES or proc.name == "simulator":
            for path in proc.log_files():
                text = path.read_text(errors="replace") if path.exists() else ""
                for secret in secrets:
                    assert secret not in text, f"{proc.name} log {path.name} leaks a secret"


def test_down_stops_every_process(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    cli = [sys.executable, "-m", "clipline.cli", "--home", str(home)]
    started = subprocess.run([*cli, "up"], capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    state = StackState.load(home)
    assert state is not None
    pids = [p.pid for p in state.processes]
    assert len(pids) == 8  # nats, seaweedfs, simulator, five services
    assert all(pid_alive(pid) for pid in pids)
    stopped = subprocess.run([*cli, "down"], capture_output=True, text=True, check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert processes_under(home) == []


def processes_under(home: Path) -> list[int]:
    """Any live process whose working directory or command line points into `home`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(home)) or str(home) in cmdline:
            found.append(int(entry.name))
    return found


def test_removing_a_tenant_revokes_its_nats_credentials_and_its_api_keys(
    stack: tuple[StackState, OtlpSink], tmp_path: Path
) -> None:
    """`clipline tenants remove T` on a running stack: T's API key is refused (401) and its
    NATS credential too, at once; the default tenant's key still works."""
    state, _ = stack
    tenant = f"gone{uuid.uuid4().hex[:6]}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clipline.cli", "--home", state.home, *args],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert cli("tenants", "add", tenant).returncode == 0
    made = cli("keys", "create", "--tenant", tenant, "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    creds = tmp_path / "gone.creds"
    assert cli("nats-creds", "--tenant", tenant, "-o", str(creds)).returncode == 0
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{state.intake_url}/v1/jobs", headers=auth, timeout=10).status_code == 200
    removed = cli("tenants", "remove", tenant)
    assert removed.returncode == 0, removed.stderr
    assert "1 API key(s) revoked" in removed.stdout
    refused = httpx.get(f"{state.intake_url}/v1/jobs", headers=auth, timeout=10)
    assert refused.status_code == 401
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(
            nats.connect(state.nats_url, user_credentials=str(creds), allow_reconnect=False)
        )
    listed = cli("tenants", "list", "--json")
    assert {"name": tenant, "users": 1, "revoked": 0, "removed": True} in json.loads(listed.stdout)

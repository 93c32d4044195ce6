"""Intake's HTTP API and caller webhooks: a callback_url is checked when the job is asked for
(form, private addresses, the tenant's secret), kept on the record, and GET /v1/jobs/{id}
shows the deliveries."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import openai
import pytest
from PIL import Image

from services.intake.adapters import probe_image
from services.intake.callbacks import Deliveries, Endpoint, TargetDelivery
from services.intake.callbacks_send import Sender
from services.intake.http import build_http
from services.intake.ports import Deps
from shared.contracts import Event
from shared.registry import load_registry
from tests.fakes import InMemoryApiKeys, InMemoryInputStore, InMemoryJobStore, bearer
from tests.webhook_signing import SECRET

BODY = {"model": "sora-2", "size": "1280x720", "seconds": 4, "prompt": "a paper boat"}
HOOK = "https://hooks.example.com/clipline?x=1"


class MemoryCallbacks:
    """The callbacks bucket in memory."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.states: dict[tuple[str, str], Deliveries] = {}
        self.down = False

    async def endpoint(self, tenant: str) -> Endpoint | None:
        return self.endpoints.get(tenant)

    async def deliveries(self, tenant: str, job_id: str) -> Deliveries | None:
        if self.down:
            raise ConnectionError("nats is down")
        return self.states.get((tenant, job_id))

    async def change(
        self, tenant: str, job_id: str, change: Callable[[Deliveries | None], Deliveries | None]
    ) -> Deliveries | None:
        new = change(self.states.get((tenant, job_id)))
        if new is not None:
            self.states[(tenant, job_id)] = new
        return new


async def _noop(event: Event) -> None:
    return None


def api(
    jobs: InMemoryJobStore, store: MemoryCallbacks | None, *, allow_private: bool = False
) -> httpx.AsyncClient:
    sender = Sender(jobs, store, allow_private=allow_private) if store is not None else None
    deps = Deps(
        jobs, InMemoryInputStore(), _noop, load_registry().provider("simulator"), probe_image,
        InMemoryApiKeys(("acme",)), callbacks=sender,
    )  # fmt: skip
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_http(deps)), base_url="http://intake",
        headers=bearer("acme"),
    )  # fmt: skip


@pytest.fixture
async def configured() -> AsyncIterator[tuple[httpx.AsyncClient, MemoryCallbacks]]:
    store = MemoryCallbacks()
    store.endpoints["acme"] = Endpoint(secret=SECRET, updated_at=datetime.now(UTC))
    async with api(InMemoryJobStore(), store) as client:
        yield client, store


async def test_a_callback_url_is_kept_on_the_record_and_its_deliveries_shown(
    configured: tuple[httpx.AsyncClient, MemoryCallbacks],
) -> None:
    client, store = configured
    made = await client.post("/v1/jobs", json={**BODY, "callback_url": HOOK})
    assert made.status_code == 202, made.text
    job_id = made.json()["job_id"]

    shown = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert shown["callback_url"] == HOOK
    assert shown["callbacks"] is None  # nothing sent yet
    store.states[("acme", job_id)] = Deliveries(
        event="completed", webhook_id="msg_1",
        targets={"job": TargetDelivery(url=HOOK, state="delivered", attempts=1, last_status=200)},
    )  # fmt: skip
    shown = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert shown["callbacks"]["targets"]["job"]["state"] == "delivered"
    assert shown["callbacks"]["webhook_id"] == "msg_1"
    store.down = True
    shown = await client.get(f"/v1/jobs/{job_id}")
    assert shown.status_code == 200
    assert shown.json()["callbacks"] == {"error": "unavailable"}


@pytest.mark.parametrize(
    ("url", "reason", "says"),
    [
        ("ftp://hooks.example.com/x", "invalid_callback_url", "absolute http(s) URL"),
        ("/relative", "invalid_callback_url", "absolute http(s) URL"),
        ("https://user:pw@hooks.example.com/", "invalid_callback_url", "credentials"),
        ("http://127.0.0.1:9/x", "invalid_callback_url", "private, loopback or link-local"),
        ("http://[::1]/x", "invalid_callback_url", "private, loopback or link-local"),
        ("http://169.254.169.254/latest", "invalid_callback_url", "link-local"),
        ("http://10.1.2.3/x", "invalid_callback_url", "private"),
        ("http://localhost:8080/x", "invalid_callback_url", "private"),
        ("https://hooks.example.com/" + "a" * 2100, "invalid_callback_url", "2048"),
        (12, "invalid_callback_url", "string"),
    ],
)
async def test_a_callback_url_that_cannot_be_used_is_refused(
    configured: tuple[httpx.AsyncClient, MemoryCallbacks], url: object, reason: str, says: str
) -> None:
    client, _ = configured
    refused = await client.post("/v1/jobs", json={**BODY, "callback_url": url})
    assert refused.status_code == 422, refused.text
    assert says in refused.text
    assert reason in refused.text


async def test_a_private_address_is_taken_where_the_deployment_allows_it() -> None:
    store = MemoryCallbacks()
    store.endpoints["acme"] = Endpoint(secret=SECRET, updated_at=datetime.now(UTC))
    async with api(InMemoryJobStore(), store, allow_private=True) as client:
        made = await client.post("/v1/jobs", json={**BODY, "callback_url": "http://127.0.0.1:9/x"})
    assert made.status_code == 202, made.text


async def test_a_tenant_without_a_secret_is_told_how_to_get_one() -> None:
    async with api(InMemoryJobStore(), MemoryCallbacks()) as client:
        refused = await client.post("/v1/jobs", json={**BODY, "callback_url": HOOK})
        plain = await client.post("/v1/jobs", json=BODY)
    assert refused.status_code == 422
    assert "callbacks_not_configured" in refused.text
    assert "clipline webhooks set" in refused.text
    assert plain.status_code == 202  # no callback_url: no secret needed


async def test_without_a_sender_a_callback_url_is_refused_and_no_member_is_shown() -> None:
    async with api(InMemoryJobStore(), None) as client:
        refused = await client.post("/v1/jobs", json={**BODY, "callback_url": HOOK})
        made = await client.post("/v1/jobs", json=BODY)
        shown = (await client.get(f"/v1/jobs/{made.json()['job_id']}")).json()
    assert "callbacks_unavailable" in refused.text
    assert "callbacks" not in shown


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1280, 720), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


VIDEO_BODY = {"prompt": "a paper boat", "model": "sora-2", "seconds": "4", "size": "1280x720"}


async def test_the_openai_facade_takes_a_callback_url_as_the_sdks_extra_body(
    configured: tuple[httpx.AsyncClient, MemoryCallbacks],
) -> None:
    client, _ = configured
    made = await client.post("/v1/videos", json={**VIDEO_BODY, "callback_url": HOOK})
    assert made.status_code == 200, made.text
    job_id = "job_" + made.json()["id"].removeprefix("video_")
    assert (await client.get(f"/v1/jobs/{job_id}")).json()["callback_url"] == HOOK
    # multipart (the SDK with an input_reference file) sends extra_body as form fields
    files = {"input_reference": ("frame.png", png(), "image/png")}
    form = await client.post(
        "/v1/videos", data={**VIDEO_BODY, "callback_url": HOOK + "&m=1"}, files=files
    )
    assert form.status_code == 200, form.text
    job_id = "job_" + form.json()["id"].removeprefix("video_")
    assert (await client.get(f"/v1/jobs/{job_id}")).json()["callback_url"] == HOOK + "&m=1"


@pytest.mark.parametrize(
    ("url", "says"),
    [("http://127.0.0.1:9/x", "private, loopback or link-local"),
     ("http://169.254.169.254/latest", "link-local"), ("ftp://hooks.example.com/x", "http(s)"),
     (12, "string")],
)  # fmt: skip
async def test_the_facade_refuses_a_callback_url_as_the_native_route_does_in_openais_envelope(
    configured: tuple[httpx.AsyncClient, MemoryCallbacks], url: object, says: str
) -> None:
    client, _ = configured
    refused = await client.post("/v1/videos", json={**VIDEO_BODY, "callback_url": url})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_callback_url", "callback_url")
    assert says in error["message"]
    native = await client.post("/v1/jobs", json={**BODY, "callback_url": url})
    assert native.status_code == 422  # the same rule, in the native API's terms


async def test_the_facade_tells_a_tenant_without_a_secret_how_to_get_one() -> None:
    async with api(InMemoryJobStore(), MemoryCallbacks()) as client:
        refused = await client.post("/v1/videos", json={**VIDEO_BODY, "callback_url": HOOK})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "callbacks_not_configured"
    assert "clipline webhooks set" in refused.json()["error"]["message"]


@pytest.mark.filterwarnings(
    "ignore:The Sora API is scheduled to permanently shut down:DeprecationWarning"
)  # openai 3.x's own warning on every videos call
async def test_the_openai_sdks_extra_body_carries_a_callback_url_json_and_multipart() -> None:
    store = MemoryCallbacks()
    store.endpoints["acme"] = Endpoint(secret=SECRET, updated_at=datetime.now(UTC))
    jobs = InMemoryJobStore()
    async with api(jobs, store) as client:
        sdk = openai.AsyncOpenAI(
            api_key=client.headers["Authorization"].removeprefix("Bearer "),
            base_url="http://intake/v1", max_retries=0,
            http_client=client,  # type: ignore[arg-type]  # 3.x types it as its own httpx2's
        )  # fmt: skip
        made = await sdk.videos.create(
            prompt="a paper boat", size="1280x720", extra_body={"callback_url": HOOK}
        )
        framed = await sdk.videos.create(
            prompt="a paper boat", size="1280x720", input_reference=("f.png", png(), "image/png"),
            extra_body={"callback_url": HOOK + "&f=1"},
        )  # fmt: skip
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.videos.create(
                prompt="x", size="1280x720", extra_body={"callback_url": "http://10.0.0.1/"}
            )
    assert refused.value.code == "invalid_callback_url"
    for video, url in ((made, HOOK), (framed, HOOK + "&f=1")):
        record = await jobs.get("acme", "job_" + video.id.removeprefix("video_"))
        assert record is not None
        assert record.callback_url == url

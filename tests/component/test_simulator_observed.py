"""The simulator's own accounting (issue 20): every request counted by its endpoint's template
and status, every create by model (what the upstream would bill, for a dashboard to compare
with clipline's jobs)."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from services.simulator.app import build_app
from services.simulator.settings import SimulatorSettings
from tests.fakes import FakeClock
from tests.otel_probe import metric_reader, reading

API_KEY = "sk-sim-observed"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(autouse=True)
def _metrics() -> None:
    metric_reader()


def requests(endpoint: str, status: str) -> float:
    return reading("clipline.simulator.requests", {"endpoint": endpoint, "status": status})


async def test_requests_are_counted_by_template_and_status_and_creates_by_model() -> None:
    app = build_app(
        SimulatorSettings(api_key=SecretStr(API_KEY), rate_limit_tier="off"), clock=FakeClock()
    )
    created = reading("clipline.simulator.creates", {"model": "sora-2"})
    before = {
        key: requests(*key)
        for key in [
            ("POST /v1/videos", "200"),
            ("GET /v1/videos/{video_id}", "200"),
            ("GET /v1/videos/{video_id}", "404"),
            ("POST /v1/videos", "401"),
            ("other", "404"),
        ]
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        made = await http.post("/v1/videos", json={"prompt": "a fox"}, headers=AUTH)
        assert made.status_code == 200
        video_id = made.json()["id"]
        assert (await http.get(f"/v1/videos/{video_id}", headers=AUTH)).status_code == 200
        missing = await http.get("/v1/videos/video_" + "0" * 48, headers=AUTH)
        assert missing.status_code == 404
        assert (await http.post("/v1/videos", json={"prompt": "x"})).status_code == 401
        assert (await http.get("/v1/nothing/here", headers=AUTH)).status_code == 404
    await app.aclose()

    after = {key: requests(*key) - count for key, count in before.items()}
    assert after == {
        ("POST /v1/videos", "200"): 1,
        ("GET /v1/videos/{video_id}", "200"): 1,  # the template: no video id in a label
        ("GET /v1/videos/{video_id}", "404"): 1,
        ("POST /v1/videos", "401"): 1,  # refused: counted, but no create
        ("other", "404"): 1,
    }
    assert reading("clipline.simulator.creates", {"model": "sora-2"}) - created == 1

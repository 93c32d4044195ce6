"""The simulator with a state dir (CLIPLINE_SIM_STATE_DIR) keeps its jobs across its own restart.

The ASGI tests restart the app in-process with a fake clock whose monotonic reading starts over,
as a new process's does. The last tests run `python -m services.simulator` for real and SIGKILL
it while jobs are in progress.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from clipline.servers import LOOPBACK, Proc, free_port, http_ok, spawn, stop_pid, wait_until
from services.simulator.app import Simulator, build_app
from services.simulator.assets import AssetCache, AssetKey
from services.simulator.faults import Faults, Generation
from services.simulator.settings import SimulatorSettings
from services.simulator.webhooks import new_secret
from tests.fakes import START_WALL, FakeClock

API_KEY = "sk-sim-state"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUEUE, GENERATION = 1.0, 4.0
DONE = QUEUE + GENERATION
REPO = Path(__file__).resolve().parents[2]


def fake_asset(key: AssetKey) -> bytes:
    return f"{key.variant}:{key.width}x{key.height}:{key.seconds}".encode() * 16


def make_app(state_dir: Path, clock: FakeClock | None = None, **overrides: Any) -> Simulator:
    webhook_client = overrides.pop("webhook_client", None)
    values: dict[str, Any] = {
        "api_key": SecretStr(API_KEY),
        "queue_seconds": QUEUE,
        "generation_seconds": GENERATION,
        "rate_limit_tier": "off",
        "state_dir": state_dir,
    }
    return build_app(
        SimulatorSettings(**(values | overrides)),
        clock=clock,
        cache=AssetCache(fps=12, renderer=fake_asset),
        webhook_client=webhook_client,
    )


@asynccontextmanager
async def running(app: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in-process until the block ends; then it closes, as on shutdown."""
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as http:
            yield http
    finally:
        await app.aclose()


def restarted(clock: FakeClock, after: float = 0.0) -> FakeClock:
    """A new process's clock `after` seconds later: its monotonic clock starts elsewhere."""
    later = FakeClock()
    later.wall = clock.wall + after
    later.mono = 3.0
    return later


async def create(http: httpx.AsyncClient, prompt: str = "a red fox", **headers: str) -> str:
    response = await http.post("/v1/videos", json={"prompt": prompt}, headers=AUTH | headers)
    assert response.status_code == 200, response.text
    video_id: str = response.json()["id"]
    return video_id


async def video(http: httpx.AsyncClient, video_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/videos/{video_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def control(http: httpx.AsyncClient, what: str) -> list[dict[str, Any]]:
    response = await http.get(f"/control/{what}")
    assert response.status_code == 200
    records: list[dict[str, Any]] = response.json()
    return records


async def listed(http: httpx.AsyncClient) -> list[tuple[str, str]]:
    response = await http.get("/v1/videos", params={"limit": "100"}, headers=AUTH)
    return [(item["id"], item["status"]) for item in response.json()["data"]]


# --- in-process restarts ------------------------------------------------------------------------


async def test_jobs_deletes_characters_and_accounting_survive_a_restart(tmp_path: Path) -> None:
    state_dir, clock = tmp_path / "state", FakeClock()
    async with running(make_app(state_dir, clock)) as http:
        source = await create(http, "the source", **{"X-Client-Request-Id": "req-source"})
        clock.advance(DONE)
        remix = await http.post(f"/v1/videos/{source}/remix", json={"prompt": "p"}, headers=AUTH)
        remixed = remix.json()["id"]
        blocked = await create(http, "a moderation test clip")
        character = (
            await http.post(
                "/v1/videos/characters",
                files={"name": (None, "Mossy"), "video": ("m.mp4", b"\x00\x00\x00\x18ftyp")},
                headers=AUTH,
            )
        ).json()
        assert (await http.delete(f"/v1/videos/{source}", headers=AUTH)).status_code == 200
        refused = await http.post("/v1/videos", json={"prompt": ""}, headers=AUTH)
        assert refused.status_code == 400
        clock.advance(2.0)
        before = await video(http, remixed)
        creates, attempts = await control(http, "creates"), await control(http, "attempts")
        before_list = await listed(http)
    assert (before["status"], before["progress"]) == ("in_progress", 25)

    later = restarted(clock, after=1.0)
    async with running(make_app(state_dir, later)) as http:
        after = await video(http, remixed)
        assert (after["status"], after["progress"]) == ("in_progress", 50)  # 2 s of 4 generating
        assert after | {"progress": 25} == before
        assert (await http.get(f"/v1/videos/{source}", headers=AUTH)).status_code == 404
        failed = await video(http, blocked)
        assert (failed["status"], failed["error"]["code"]) == ("failed", "moderation_blocked")
        fetched = await http.get(f"/v1/videos/characters/{character['id']}", headers=AUTH)
        assert fetched.json() == character
        assert await control(http, "creates") == creates
        assert await control(http, "attempts") == attempts
        assert await listed(http) == before_list
        page = await http.get(
            "/v1/videos", params={"after": source, "order": "asc"}, headers=AUTH
        )  # a deleted video's cursor stays valid
        assert [item["id"] for item in page.json()["data"]] == [remixed, blocked]

        later.advance(2.0)
        done = await video(http, remixed)
        assert done["status"] == "completed"
        assert done["completed_at"] == math.ceil(START_WALL + DONE + DONE)
        content = await http.get(f"/v1/videos/{remixed}/content", headers=AUTH)
        assert content.status_code == 200
        assert content.content == fake_asset(AssetKey("video", 720, 1280, 4, 12))

        fresh = await create(http, "after the restart")
        assert fresh not in {record["video_id"] for record in creates}
        assert [r["video_id"] for r in await control(http, "creates")] == [
            *(r["video_id"] for r in creates),
            fresh,
        ]


async def test_seeded_fates_do_not_notice_a_restart(tmp_path: Path) -> None:
    faults = Faults(
        seed=11,
        job_failure_rate=0.5,
        generation=Generation(distribution="uniform", seconds=4, spread=2),
    )

    async def fates(restart_after: int | None, state_dir: Path) -> list[tuple[str, int]]:
        clock, ids = FakeClock(), []
        async with running(make_app(state_dir, clock, faults=faults)) as http:
            for n in range(restart_after or 8):
                ids.append(await create(http, f"clip {n}"))
        if restart_after is not None:
            clock = restarted(clock)
            async with running(make_app(state_dir, clock, faults=faults)) as http:
                for n in range(restart_after, 8):
                    ids.append(await create(http, f"clip {n}"))
        clock.advance(60)
        async with running(make_app(state_dir, restarted(clock), faults=faults)) as http:
            return [
                (found["status"], found["completed_at"] - found["created_at"])
                for found in [await video(http, video_id) for video_id in ids]
            ]

    straight = await fates(None, tmp_path / "straight")
    assert {status for status, _ in straight} == {"completed", "failed"}
    assert len({seconds for _, seconds in straight}) > 1
    assert await fates(3, tmp_path / "restarted") == straight


async def test_a_job_finishing_after_a_restart_still_sends_its_webhook(tmp_path: Path) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receiver(request: httpx.Request) -> httpx.Response:
        await received.put(json.loads(await request.aread()))
        return httpx.Response(200)

    hooks = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    webhook: dict[str, Any] = {
        "webhook_url": "https://hooks.example.test/video",
        "webhook_secret": SecretStr(new_secret()),
        "webhook_client": hooks,
        "queue_seconds": 0,
    }
    state_dir = tmp_path / "state"
    # Real clocks: the dispatcher sleeps until the job is due. 2 s leaves the first app ample
    # time to shut down before the event is due.
    async with running(make_app(state_dir, generation_seconds=2.0, **webhook)) as http:
        video_id = await create(http)
    async with running(make_app(state_dir, generation_seconds=2.0, **webhook)) as http:
        assert (await http.get("/healthz")).status_code == 200  # the first request resumes
        event = await asyncio.wait_for(received.get(), 10)
        assert (event["type"], event["data"]) == ("video.completed", {"id": video_id})
        log = await control(http, "webhooks")
    await hooks.aclose()
    assert [d["video_id"] for d in log] == [video_id]
    assert received.empty()


async def test_reset_empties_the_state_dir(tmp_path: Path) -> None:
    state_dir, clock = tmp_path / "state", FakeClock()
    async with running(make_app(state_dir, clock)) as http:
        video_id = await create(http)
        assert (await http.post("/control/reset")).status_code == 200
    async with running(make_app(state_dir, restarted(clock))) as http:
        assert (await http.get(f"/v1/videos/{video_id}", headers=AUTH)).status_code == 404
        assert await control(http, "creates") == []
        assert await control(http, "attempts") == []


async def test_max_jobs_bounds_the_restored_table(tmp_path: Path) -> None:
    state_dir, clock = tmp_path / "state", FakeClock()
    async with running(make_app(state_dir, clock)) as http:
        ids = [await create(http, f"clip {n}") for n in range(4)]
    async with running(make_app(state_dir, restarted(clock), max_jobs=2)) as http:
        assert [video_id for video_id, _ in await listed(http)] == ids[:1:-1]
        assert (await http.get(f"/v1/videos/{ids[0]}", headers=AUTH)).status_code == 404
        assert len(await control(http, "creates")) == 4


def test_a_blank_state_dir_means_none() -> None:
    assert SimulatorSettings(state_dir="").state_dir is None


# --- a real process, killed -----------------------------------------------------------------------


def simulator(env: dict[str, str], log: Path) -> Proc:
    return spawn("simulator", [sys.executable, "-m", "services.simulator"], log, env, REPO)


def start(env: dict[str, str], log: Path) -> Proc:
    proc = simulator(env, log)
    try:
        wait_until(
            http_ok(f"http://{LOOPBACK}:{env['CLIPLINE_SIM_PORT']}/healthz"), "sim", 30, proc
        )
    except BaseException:
        stop_pid(proc.pid)
        raise
    return proc


def status_of(http: httpx.Client, video_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/videos/{video_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def reaches(http: httpx.Client, video_id: str, done: Callable[[dict[str, Any]], bool]) -> bool:
    return done(status_of(http, video_id))


def completed(found: dict[str, Any]) -> bool:
    return bool(found["status"] == "completed")


def test_a_killed_simulator_comes_back_with_its_jobs(tmp_path: Path) -> None:
    port = free_port()
    generation = 4.0
    env = {
        "CLIPLINE_SIM_HOST": LOOPBACK,
        "CLIPLINE_SIM_PORT": str(port),
        "CLIPLINE_SIM_API_KEY": API_KEY,
        "CLIPLINE_SIM_QUEUE_SECONDS": "0",
        "CLIPLINE_SIM_GENERATION_SECONDS": str(generation),
        "CLIPLINE_SIM_RATE_LIMIT_TIER": "off",
        "CLIPLINE_SIM_SMALL_ASSETS": "true",
        "CLIPLINE_SIM_STATE_DIR": str(tmp_path / "state"),
    }
    procs: list[Proc] = []
    http = httpx.Client(base_url=f"http://{LOOPBACK}:{port}", headers=AUTH, timeout=10)
    try:
        procs.append(start(env, tmp_path / "first.log"))
        # Two finished jobs first (generation 0 via the faults): one to delete, one to remix.
        instant = {"generation": {"seconds": 0}}
        assert http.put("/control/faults", json=instant).status_code == 200
        gone = http.post("/v1/videos", json={"prompt": "to be deleted"}).json()["id"]
        source = http.post("/v1/videos", json={"prompt": "to be remixed"}).json()["id"]
        blocked = http.post("/v1/videos", json={"prompt": "a moderation test"}).json()["id"]
        assert http.put("/control/faults", json={}).status_code == 200
        for video_id in (gone, source):
            wait_until(partial(reaches, http, video_id, completed), "an instant job", 10)
        assert http.delete(f"/v1/videos/{gone}").status_code == 200
        # The jobs in progress at the kill: two creates and a remix, each timed.
        running: dict[str, float] = {}
        for n in range(2):
            headers = {"X-Client-Request-Id": f"req-{n}"}
            response = http.post("/v1/videos", json={"prompt": f"clip {n}"}, headers=headers)
            running[response.json()["id"]] = time.time()
        remix = http.post(f"/v1/videos/{source}/remix", json={"prompt": "again"})
        running[remix.json()["id"]] = time.time()
        creates = http.get("/control/creates").json()
        attempts = http.get("/control/attempts").json()
        first = next(iter(running))
        wait_until(lambda: reaches(http, first, lambda v: v["progress"] >= 40), "40 %", 10)
        progress = {video_id: status_of(http, video_id)["progress"] for video_id in running}
        assert all(v < 100 for v in progress.values()), progress

        os.kill(procs[0].pid, signal.SIGKILL)
        assert procs[0].popen.wait(timeout=10) == -signal.SIGKILL
        procs.append(start(env, tmp_path / "second.log"))

        first_look = {video_id: status_of(http, video_id) for video_id in running}
        for video_id, now in first_look.items():  # not restarted from zero
            assert completed(now) or now["progress"] >= progress[video_id], (video_id, now)
        finished: dict[str, float] = {}

        def all_completed() -> bool:
            for video_id in running.keys() - finished.keys():
                if completed(status_of(http, video_id)):
                    finished[video_id] = time.time()
            return finished.keys() == running.keys()

        wait_until(all_completed, "jobs completed after the restart", generation + 10)
        for video_id, created in running.items():  # on time: by wall clock from creation
            if not completed(first_look[video_id]):  # else it finished while we restarted
                assert finished[video_id] - created <= generation + 1.0, (video_id, finished)
            assert status_of(http, video_id)["completed_at"] <= math.ceil(created + generation)
            content = http.get(f"/v1/videos/{video_id}/content")
            assert content.status_code == 200
            assert content.content[4:8] == b"ftyp"
        assert http.get(f"/v1/videos/{gone}").status_code == 404
        assert status_of(http, blocked)["error"]["code"] == "moderation_blocked"
        assert http.get("/control/creates").json() == creates
        assert http.get("/control/attempts").json() == attempts
        ids = [record["video_id"] for record in creates]
        assert len(ids) == len(set(ids)) == 6

        fresh = http.post("/v1/videos", json={"prompt": "after the restart"}).json()["id"]
        assert fresh not in ids
        assert [r["video_id"] for r in http.get("/control/creates").json()] == [*ids, fresh]
    finally:
        http.close()
        for proc in procs:
            stop_pid(proc.pid)


def test_a_bad_state_dir_stops_the_simulator_with_one_line(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "journal.jsonl").write_text('{"t":"journal","version":1}\n{"t":"nope"}\n{}\n')
    env = {"CLIPLINE_SIM_PORT": str(free_port()), "CLIPLINE_SIM_STATE_DIR": str(state_dir)}
    proc = simulator(env, tmp_path / "log")
    try:
        assert proc.popen.wait(timeout=30) == 1
    finally:
        stop_pid(proc.pid)
    output = proc.log_path.read_text().strip()
    assert output.startswith("configuration error: CLIPLINE_SIM_STATE_DIR: "), output
    assert f"{state_dir}/journal.jsonl line 2: " in output
    assert "\n" not in output


def test_an_unusable_state_dir_stops_the_simulator(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    env = {"CLIPLINE_SIM_STATE_DIR": str(tmp_path / "file" / "state")}
    proc = simulator(env, tmp_path / "log")
    try:
        assert proc.popen.wait(timeout=30) == 1
    finally:
        stop_pid(proc.pid)
    assert proc.log_path.read_text().strip() == (
        f"configuration error: CLIPLINE_SIM_STATE_DIR: cannot use {tmp_path}/file/state: "
        "Not a directory"
    )

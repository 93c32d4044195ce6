"""Headless Chromium (Debian's /usr/bin/chromium) driven over the DevTools protocol: open a page,
wait until its DOM says what a test waits for, keep a screenshot. aiohttp's websocket client,
nothing else to install."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)  # fmt: skip


def binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("chromium not found: `make system-deps` installs Debian's chromium")
    return found


class Page:
    """One tab, spoken to over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        async for message in self._ws:
            data = json.loads(message.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return dict(data.get("result") or {})
        raise RuntimeError(f"{method}: the browser closed the connection")

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def dom(self) -> str:
        result = await self.call(
            "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
        )
        return str(result["result"].get("value") or "")

    async def text(self) -> str:
        result = await self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
            returnByValue=True,
        )  # fmt: skip
        return str(result["result"].get("value") or "")

    async def wait_for(self, check: Callable[[str], bool], what: str, seconds: float) -> str:
        """The page's DOM once `check` accepts it (polled every 0.25 s); TimeoutError naming
        `what` and the text seen last otherwise."""
        deadline = time.monotonic() + seconds
        while True:
            dom = await self.dom()
            if check(dom):
                return dom
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not in the page after {seconds:.0f}s:\n"
                                   f"{(await self.text())[:3000]}")  # fmt: skip
            await asyncio.sleep(0.25)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def browser(width: int = 1400, height: int = 900) -> AsyncIterator[Page]:
    """A fresh headless Chromium (own profile folder, deleted after) and one page of it."""
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as folder:
        profile, log = Path(folder) / "profile", Path(folder) / "chromium.log"
        argv = [binary(), *FLAGS, f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank"]  # fmt: skip
        with log.open("w") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            port = await _devtools_port(proc, profile, log)
            async with aiohttp.ClientSession() as http:
                async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as made:
                    target = await made.json()
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    await page.call(
                        "Emulation.setDeviceMetricsOverride",
                        width=width, height=height, deviceScaleFactor=1, mobile=False,
                    )  # fmt: skip
                    yield page
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM Chromium's process group (its renderers and zygote too), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue


async def _devtools_port(
    proc: subprocess.Popen[bytes], profile: Path, log: Path, seconds: float = 60.0
) -> int:
    """The port Chromium's DevTools listen on: the first line of the DevToolsActivePort file
    it writes into its profile once they do."""
    deadline = time.monotonic() + seconds
    active = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(active.read_text().splitlines()[0])
        await asyncio.sleep(0.1)
    raise RuntimeError("chromium did not start its DevTools:\n" + log.read_text()[-3000:])

"""schemathesis against intake's OpenAPI document: its CLI generates requests to every
operation (the native API and the OpenAI-compatible facade) and sends them to intake on a real
socket; none may answer a 5xx or anything the document does not declare (status, content type,
headers, body schema)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from clipline.servers import free_port
from services.intake.ports import StoredEvent
from tests.component.facade_support import serving
from tests.fakes import bearer

EXAMPLES = 25
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
"""What the issue asks: no 5xx, nothing the document does not declare. Not schemathesis's
`positive_data_acceptance`: a body valid by the schema may still name a size the model does
not have (the registry's check, answered 422 with the field), which is right."""


class NoEvents:
    """A job's events: none yet (a generated request never names a job that exists)."""

    async def follow(
        self, tenant: str, job_id: str, after: int, idle_seconds: float
    ) -> AsyncIterator[StoredEvent | None]:
        yield None


def schemathesis_run(
    url: str, authorization: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/v1/openapi.json",
        "--checks", CHECKS, "--max-examples", str(EXAMPLES), "--seed", "1",
        "--header", f"Authorization: {authorization}", "--no-color",
    ]  # fmt: skip
    # its cache (.schemathesis/) goes to `workdir`, never into the repository
    return subprocess.run(
        command, capture_output=True, text=True, timeout=240, check=False, cwd=workdir
    )


@pytest.mark.timeout(300)
async def test_no_generated_request_gets_a_5xx_or_an_undeclared_answer(tmp_path: Path) -> None:
    async with serving(job_events=NoEvents()) as s:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(s.app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
        )
        serve = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(10):
                while not server.started:  # until uvicorn listens
                    assert not serve.done()
                    await asyncio.sleep(0.02)
            url, key = f"http://127.0.0.1:{port}", bearer("acme")["Authorization"]
            run = await asyncio.to_thread(schemathesis_run, url, key, tmp_path)
        finally:
            server.should_exit = True
            await serve
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", run.stdout)  # it ran every operation of the document
    assert tested is not None, run.stdout[-2000:]
    assert int(tested[1]) >= 11, run.stdout[-2000:]

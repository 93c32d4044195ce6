"""The job commands as a remote client of the embedded stack: only CLIPLINE_URL and an API key,
run from a folder with no stack file (so no NATS, no S3 credentials): submit --wait, jobs list,
jobs show and events, each with --json."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from clipline.stack import StackState
from tests.conftest import repo_root
from tests.e2e.harness import as_tenant

pytestmark = pytest.mark.e2e
DEADLINE = 90.0


@pytest.fixture
def stack(surfaces_stack: StackState) -> StackState:
    """The e2e modules' shared stack (tests/e2e/conftest.py)."""
    return surfaces_stack


def remote(stack: StackState, key: str, elsewhere: Path, *args: str) -> tuple[int, str, str]:
    """`clipline ARGS` from a folder without a stack, told only the URL and the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPLINE_")}
    env |= {"PYTHONPATH": str(repo_root()), "CLIPLINE_URL": stack.intake_url,
            "CLIPLINE_API_KEY": key, "XDG_CONFIG_HOME": str(elsewhere)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "clipline.cli", "--home", str(elsewhere / "none"), *args],
        capture_output=True, text=True, env=env, timeout=DEADLINE + 30, check=False, cwd=elsewhere,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def test_a_remote_client_submits_follows_lists_and_shows(stack: StackState, tmp_path: Path) -> None:
    tenant = f"rc{uuid.uuid4().hex[:6]}"
    key = as_tenant(stack, tenant)["Authorization"].removeprefix("Bearer ")
    submit = ["submit", "--wait", "--json", "--prompt", "a kite", "--timeout", str(DEADLINE)]
    code, out, err = remote(stack, key, tmp_path, *submit, "--size", "1280x720")
    assert code == 0, err
    record = json.loads(out)
    job_id = record["job_id"]
    assert (record["status"], record["tenant"]) == ("completed", tenant)
    assert key not in out + err

    code, out, err = remote(stack, key, tmp_path, "jobs", "show", job_id, "--json")
    assert (code, json.loads(out)["status"]) == (0, "completed"), err
    code, out, err = remote(stack, key, tmp_path, "jobs", "list", "--json", "--status",
                            "completed")  # fmt: skip
    assert code == 0, err
    assert [json.loads(line)["job_id"] for line in out.splitlines()] == [job_id]
    code, out, err = remote(stack, key, tmp_path, "events", job_id, "--json")
    assert code == 0, err
    kinds = [json.loads(line)["event"] for line in out.splitlines()]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "completed"
    assert {"admitted", "submitted", "generated"} <= set(kinds)

    other = as_tenant(stack, f"{tenant}x")["Authorization"].removeprefix("Bearer ")
    code, _, err = remote(stack, other, tmp_path, "jobs", "show", job_id)
    assert code == 1
    assert f"no job {job_id} for this API key (CLIPLINE_URL)" in err


def test_a_remote_wait_prints_links_that_download_the_stored_bytes(
    stack: StackState, tmp_path: Path
) -> None:
    tenant = f"rl{uuid.uuid4().hex[:6]}"
    key = as_tenant(stack, tenant)["Authorization"].removeprefix("Bearer ")
    code, out, err = remote(stack, key, tmp_path, "submit", "--wait", "--prompt", "a kite",
                            "--size", "1280x720", "--timeout", str(DEADLINE))  # fmt: skip
    assert code == 0, err
    assert "s3://" not in out
    links = dict(re.findall(r"^  (video|thumbnail|spritesheet) +(https?://\S+) \(", out, re.M))
    assert set(links) == {"video", "thumbnail", "spritesheet"}, out
    job_id = out.split()[1]
    code, shown, err = remote(stack, key, tmp_path, "jobs", "show", job_id, "--json")
    assert code == 0, err
    for asset in json.loads(shown)["assets"]:
        got = httpx.get(links[asset["variant"]], timeout=10)  # the link is the credential
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == asset["sha256"]

"""`clipline keys` and the local CLI's kept keys against a stand-in admin API: what they send,
what they print (a key only from `create`), the 0600 key files, a revoked kept key replaced."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipline import keys_cli, local_keys
from clipline.cli import main
from clipline.servers import ServerError
from shared.apikeys import issue

URL = "http://127.0.0.1:9"
REAL_CLIENT = httpx.Client


class FakeAdminKeys:
    """The /v1/admin/keys endpoints over an in-memory dict; records each request."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.broken = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        assert request.headers["authorization"] == "Bearer tok"
        if self.broken:
            return httpx.Response(500, text="boom")
        if request.method == "POST":
            body = json.loads(request.content)
            issued = issue(body["tenant"], body.get("name", "unnamed"), datetime.now(UTC))
            self.keys[issued.record.id] = issued.record.view()
            return httpx.Response(201, json={**issued.record.view(), "key": issued.key})
        if request.method == "DELETE":
            key_id = request.url.path.rsplit("/", 1)[1]
            self.keys[key_id]["revoked_at"] = datetime.now(UTC).isoformat()
            return httpx.Response(200, json=self.keys[key_id])
        tenant = request.url.params.get("tenant")
        listed = [k for k in self.keys.values() if tenant in (None, k["tenant"])]
        return httpx.Response(200, json={"keys": listed})

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        with self.client(timeout=kw.pop("timeout", None)) as client:
            return client.request(method, url, **kw)

    def client(self, **kw: Any) -> httpx.Client:
        return REAL_CLIENT(transport=httpx.MockTransport(self.handle), **kw)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdminKeys:
    fake = FakeAdminKeys()
    monkeypatch.setenv("CLIPLINE_ADMIN_URL", URL)
    monkeypatch.setenv("CLIPLINE_ADMIN_TOKEN", "tok")
    monkeypatch.delenv(local_keys.ENV, raising=False)
    monkeypatch.setattr(httpx, "request", fake.request)
    monkeypatch.setattr(httpx, "Client", fake.client)
    return fake


def test_create_prints_the_key_once_and_json_has_id_tenant_name_key(
    admin: FakeAdminKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "keys", "create", "--tenant", "acme", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert {"id", "tenant", "name", "key"} <= made.keys()
    assert (made["tenant"], made["name"]) == ("acme", "unnamed")

    assert (
        main(["--home", str(tmp_path), "keys", "create", "--tenant", "acme", "--name", "ci"]) == 0
    )
    out = capsys.readouterr().out
    key = out.splitlines()[0]
    assert key.startswith("ck_")
    assert "shown this once" in out

    assert main(["--home", str(tmp_path), "keys", "list", "--tenant", "acme"]) == 0
    listing = capsys.readouterr().out
    assert "ci" in listing
    assert key not in listing
    assert made["key"] not in listing


def test_revoke_deletes_by_id(
    admin: FakeAdminKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--home", str(tmp_path), "keys", "create", "--tenant", "acme", "--json"])
    key_id = json.loads(capsys.readouterr().out)["id"]

    assert main(["--home", str(tmp_path), "keys", "revoke", key_id]) == 0
    assert admin.calls[-1] == ("DELETE", f"/v1/admin/keys/{key_id}")
    assert f"key {key_id} of tenant acme revoked" in capsys.readouterr().out


def test_a_kept_key_is_made_once_0600_and_made_again_when_revoked(
    admin: FakeAdminKeys, tmp_path: Path
) -> None:
    first = local_keys.ensure(tmp_path, "default", URL, "tok")
    again = local_keys.ensure(tmp_path, "default", URL, "tok")
    other = local_keys.ensure(tmp_path, "acme", URL, "tok")

    assert first == again
    assert [c[0] for c in admin.calls].count("POST") == 2  # default once, acme once
    kept = tmp_path / "api-key"
    assert kept.read_text() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert (tmp_path / "api-key.acme").read_text() == other
    for record in admin.keys.values():
        record["revoked_at"] = datetime.now(UTC).isoformat()
    renewed = local_keys.ensure(tmp_path, "default", URL, "tok")
    assert renewed != first
    assert kept.read_text() == renewed


def test_an_explicit_key_wins_and_a_broken_admin_api_never_shows_a_key(
    admin: FakeAdminKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert keys_cli.intake_key(tmp_path, "acme", "ck_given") == "ck_given"
    monkeypatch.setenv(local_keys.ENV, "ck_from_env")
    assert keys_cli.intake_key(tmp_path, "acme", None) == "ck_from_env"
    assert admin.calls == []

    admin.broken = True
    with pytest.raises(ServerError, match="cannot make an API key for tenant 'acme'"):
        local_keys.ensure(tmp_path, "acme", URL, "tok")
    assert not (tmp_path / "api-key.acme").exists()

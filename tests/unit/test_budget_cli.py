"""`clipline budget` and `clipline spend` against a stand-in admin API: what they send, what
they print, how they fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from clipline import budget_cli
from clipline.cli import main

URL = "http://127.0.0.1:9/"


class FakeAdmin:
    """Answers like pricing_guard's admin API; records every request."""

    def __init__(self, answer: Any, status: int = 200) -> None:
        self.answer, self.status = answer, status
        self.calls: list[tuple[str, str, Any, Any, dict[str, str]]] = []

    def __call__(self, method: str, url: str, **kw: Any) -> httpx.Response:
        self.calls.append((method, url, kw.get("json"), kw.get("params"), kw["headers"]))
        return httpx.Response(self.status, json=self.answer)


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPLINE_ADMIN_URL", URL)
    monkeypatch.setenv("CLIPLINE_ADMIN_TOKEN", "tok")


def money(micros: int | None) -> dict[str, Any]:
    return {"micros": micros, "usd": None if micros is None else f"${micros / 1e6:.2f}"}


def test_a_url_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLIPLINE_ADMIN_URL", URL)
    monkeypatch.delenv("CLIPLINE_ADMIN_TOKEN", raising=False)
    with pytest.raises(budget_cli.AdminError, match="CLIPLINE_ADMIN_TOKEN"):
        budget_cli.endpoint(tmp_path)


def test_without_a_stack_the_cli_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLIPLINE_ADMIN_URL", raising=False)
    status = main(["--home", str(tmp_path), "budget", "show"])
    assert status == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.usefixtures("admin_env")
def test_budget_set_puts_dollars_as_strings_with_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = {
        "scope": "tenant:acme",
        "period": "daily",
        "window": "2026-12-02",
        "limit": money(25_000_000),
        "soft": money(20_000_000),
        "used": money(400_000),
        "left": money(24_600_000),
    }
    fake = FakeAdmin(view)
    monkeypatch.setattr(httpx, "request", fake)
    args = [
        "budget",
        "set",
        "--scope",
        "tenant:acme",
        "--period",
        "daily",
        "--limit",
        "25",
        "--soft",
        "20",
    ]
    assert main(["--home", str(tmp_path), *args]) == 0

    ((method, url, body, _, headers),) = fake.calls
    assert (method, url) == ("PUT", "http://127.0.0.1:9/v1/admin/budgets/tenant:acme/daily")
    assert body == {"limit_usd": "25", "soft_usd": "20"}
    assert headers == {"Authorization": "Bearer tok"}
    out = capsys.readouterr().out
    assert "tenant:acme daily budget: limit $25.00, soft $20.00" in out
    assert "left $24.60" in out


@pytest.mark.usefixtures("admin_env")
def test_an_api_refusal_is_one_line_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = {"error": {"reason": "invalid_budget", "detail": "scope must be 'global'..."}}
    monkeypatch.setattr(httpx, "request", FakeAdmin(refusal, status=422))
    with pytest.raises(SystemExit) as exc:
        main(["budget", "set", "--scope", "team:x", "--period", "daily", "--limit", "1"])
    assert str(exc.value.code).startswith("invalid_budget: scope must be")


@pytest.mark.usefixtures("admin_env")
def test_spend_prints_a_table_and_the_money_in_flight(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {
        "scope": "global",
        "by": "model",
        "jobs": 3,
        "total": money(1_200_000),
        "rows": [
            {
                "model": "sora-2",
                "jobs": 3,
                "charged_jobs": 2,
                "released_jobs": 1,
                "seconds": 12,
                "amount_micros": 1_200_000,
                "amount": money(1_200_000),
            }
        ],
        "lifetime": {"reserved": money(400_000), "disputed": money(0)},
    }
    fake = FakeAdmin(answer)
    monkeypatch.setattr(httpx, "request", fake)
    assert main(["spend", "--by", "model"]) == 0
    assert fake.calls[0][3] == {"by": "model"}
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["MODEL", "JOBS", "CHARGED", "RELEASED", "SECONDS", "AMOUNT"]
    assert out[1].split() == ["sora-2", "3", "2", "1", "12", "$1.20"]
    assert "total $1.20 over 3 settled jobs (global); in flight: reserved $0.40" in out[3]

    assert main(["spend", "--by", "model", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == answer

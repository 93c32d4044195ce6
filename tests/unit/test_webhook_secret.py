"""The embedded stack's webhook secret: a valid `whsec_` secret chosen once, kept 0600, given
to the poller and the simulator on a restart only when the stack sends webhooks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from clipline import admin_token, webhook_secret
from clipline.stack import WEBHOOK_URL_ENV, ProcInfo, StackState, _secrets
from services.poller.settings import PollerSettings
from services.simulator.settings import SimulatorSettings


def test_a_fresh_start_makes_a_valid_secret_and_keeps_it(tmp_path: Path) -> None:
    secret = webhook_secret.for_fresh_start(tmp_path, {})
    assert secret.startswith("whsec_")
    Webhook(secret)  # the library takes it
    assert stat.S_IMODE((tmp_path / webhook_secret.FILE).stat().st_mode) == 0o600
    assert webhook_secret.for_fresh_start(tmp_path, {}) == secret
    assert webhook_secret.new() != secret
    # Both ends read it from their own variable.
    poller = PollerSettings(webhook_secret=secret)
    assert poller.webhook() is not None
    sim = SimulatorSettings(webhook_url="http://127.0.0.1:1/x", webhook_secret=secret)
    assert sim.webhook_secret is not None


def test_the_users_exported_secret_wins_and_is_kept(tmp_path: Path) -> None:
    webhook_secret.for_fresh_start(tmp_path, {})
    mine = webhook_secret.new()
    assert webhook_secret.for_fresh_start(tmp_path, {webhook_secret.ENV: mine}) == mine
    assert webhook_secret.read(tmp_path) == mine


def proc(name: str, env: dict[str, str] | None = None) -> ProcInfo:
    return ProcInfo(name=name, pid=0, port=None, log="", env=env or {})


def state(home: Path, *, sends: bool) -> StackState:
    sim_env = {WEBHOOK_URL_ENV: "http://127.0.0.1:1/webhooks/videos"} if sends else {}
    procs = [proc("nats"), proc("simulator", sim_env), proc("poller"), proc("poller-2")]
    procs.append(proc("intake"))
    return StackState(str(home), "", "", "", "", "", "", "", procs)


@pytest.mark.parametrize("sends", [True, False])
def test_a_restart_gives_the_secret_to_poller_and_simulator_only_when_webhooks_are_on(
    tmp_path: Path, sends: bool
) -> None:
    secret = webhook_secret.for_fresh_start(tmp_path, {})
    token = admin_token.kept(tmp_path)
    s = state(tmp_path, sends=sends)
    given = {p.name: _secrets(s, p) for p in s.processes}
    if sends:
        assert given["simulator"] == {webhook_secret.SIM_ENV: secret}
        assert given["poller"] == {admin_token.ENV: token, webhook_secret.ENV: secret}
        assert given["poller-2"] == {admin_token.ENV: token, webhook_secret.ENV: secret}
    else:
        assert given["simulator"] is None
        assert given["poller"] == {admin_token.ENV: token}
    assert given["intake"] == {admin_token.ENV: token}
    assert given["nats"] is None

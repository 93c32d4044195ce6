"""docker-compose.yml is valid (Debian's docker-compose validates it without a daemon)."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
TOKEN = "compose-test-admin-token"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRETS = ("CLIPLINE_ADMIN_TOKEN", "CLIPLINE_WEBHOOK_SECRET")


def config(
    token: str | None, webhook_secret: str | None = WEBHOOK_SECRET
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not installed: `make install` installs it (apt docker-compose)"
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    if token is not None:
        env["CLIPLINE_ADMIN_TOKEN"] = token
    if webhook_secret is not None:
        env["CLIPLINE_WEBHOOK_SECRET"] = webhook_secret
    return subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, check=False, cwd=ROOT, env=env,
    )  # fmt: skip


def rendered() -> dict[str, Any]:
    out = config(TOKEN)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = yaml.safe_load(out.stdout)
    return data


def test_compose_has_infrastructure_simulator_and_every_service() -> None:
    services = rendered()["services"]
    assert set(services) >= {"nats", "minio", "jaeger", "simulator", *SERVICES}
    assert {"nats-auth", "nats-provision"} <= set(services)
    assert "-js" in services["nats"]["command"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_each_service_runs_its_module_healthy_and_configured_by_env() -> None:
    services = rendered()["services"]
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == ["python", "-m", f"services.{name}"]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "healthcheck" in svc
        env = svc["environment"]
        assert env["CLIPLINE_NATS_URL"] == "nats://nats:4222"
        assert env["CLIPLINE_S3_ENDPOINT"] == "minio:9000"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:")
        for dep in ("minio", "simulator"):
            assert svc["depends_on"][dep]["condition"] == "service_healthy"
        # NATS exists, with its streams and buckets, before any service starts
        assert svc["depends_on"]["nats-provision"]["condition"] == (
            "service_completed_successfully"
        )
    for infra in ("nats", "minio", "simulator"):
        assert "healthcheck" in services[infra]


def test_pricing_guard_gets_the_admin_token_and_publishes_its_port() -> None:
    services = rendered()["services"]
    assert services["pricing_guard"]["environment"]["CLIPLINE_ADMIN_TOKEN"] == TOKEN
    assert services["pricing_guard"]["environment"]["CLIPLINE_NATS_URL"] == "nats://nats:4222"
    [port] = services["pricing_guard"]["ports"]
    assert str(port).startswith("127.0.0.1:8081:8080")
    others = [name for name in services if name != "pricing_guard"]
    assert all("CLIPLINE_ADMIN_TOKEN" not in (services[n].get("environment") or {}) for n in others)


def test_without_an_admin_token_compose_refuses_and_says_which_variable() -> None:
    out = config(None)
    assert out.returncode != 0
    assert "set CLIPLINE_ADMIN_TOKEN" in out.stderr, out.stderr


def test_the_simulators_webhooks_go_to_the_poller_signed_with_the_shared_secret() -> None:
    services = rendered()["services"]
    sim, poller = services["simulator"]["environment"], services["poller"]["environment"]
    assert sim["CLIPLINE_SIM_WEBHOOK_URL"] == "http://poller:8080/webhooks/videos"
    assert sim["CLIPLINE_SIM_WEBHOOK_SECRET"] == WEBHOOK_SECRET
    assert poller["CLIPLINE_WEBHOOK_SECRET"] == WEBHOOK_SECRET
    assert poller["CLIPLINE_POLL_WEBHOOK_SAFETY_SECONDS"] == "60"
    assert poller["CLIPLINE_NATS_URL"] == "nats://nats:4222"  # the common settings too
    others = [name for name in services if name not in ("poller", "simulator")]
    assert all(WEBHOOK_SECRET not in str(services[n].get("environment") or {}) for n in others)


def test_without_a_webhook_secret_compose_refuses_and_says_which_variable() -> None:
    out = config(TOKEN, None)
    assert out.returncode != 0
    assert "set CLIPLINE_WEBHOOK_SECRET" in out.stderr, out.stderr


def test_dockerfile_installs_the_project() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install ." in text
    for folder in ("shared", "services", "clipline"):
        assert f"COPY {folder} ./{folder}" in text


def test_each_service_has_its_own_nats_identity_readable_by_it_alone() -> None:
    """Each service runs as its own uid with its own creds file (the nats-auth one-shot makes
    them and gives each file to that uid); NATS runs in operator mode from those settings."""
    services = rendered()["services"]
    uids = {services[name]["user"] for name in SERVICES}
    assert len(uids) == len(SERVICES)  # one user per service
    init = " ".join(services["nats-auth"]["command"])
    assert "clipline nats-auth init --dir /auth" in init
    for name in SERVICES:
        svc = services[name]
        assert svc["environment"]["CLIPLINE_NATS_CREDS"] == f"/auth/creds/{name}.creds"
        assert f"{name}:{svc['user']}" in init  # chown'ed to that service's uid
        assert any(str(v).endswith(":/auth:ro") or "/auth" in str(v) for v in svc["volumes"])
    nats_conf = (ROOT / "deploy" / "nats.conf").read_text()
    assert "include auth/nats-auth.conf" in nats_conf
    assert any("/etc/nats/auth" in str(v) for v in services["nats"]["volumes"])
    provision = services["nats-provision"]
    assert provision["command"][:2] == ["clipline", "nats-provision"]
    assert provision["depends_on"]["nats"]["condition"] == "service_healthy"

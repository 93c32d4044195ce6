"""docker-compose.yml is valid (Debian's docker-compose validates it without a daemon)."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")


def rendered() -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not installed: `make install` installs it (apt docker-compose)"
    out = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = yaml.safe_load(out.stdout)
    return data


def test_compose_has_infrastructure_simulator_and_every_service() -> None:
    services = rendered()["services"]
    assert set(services) == {"nats", "minio", "jaeger", "simulator", *SERVICES}
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
        for dep in ("nats", "minio", "simulator"):
            assert svc["depends_on"][dep]["condition"] == "service_healthy"
    for infra in ("nats", "minio", "simulator"):
        assert "healthcheck" in services[infra]


def test_dockerfile_installs_the_project() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install ." in text
    for folder in ("shared", "services", "clipline"):
        assert f"COPY {folder} ./{folder}" in text

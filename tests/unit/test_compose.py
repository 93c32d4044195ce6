"""docker-compose.yml is valid (Debian's docker-compose validates it without a daemon)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
TOKEN = "compose-test-admin-token"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
S3_SECRETS = {
    "MINIO_ROOT_USER": "compose-root",
    "MINIO_ROOT_PASSWORD": "compose-root-password",
    "CLIPLINE_S3_ACCESS_KEY": "compose-services",
    "CLIPLINE_S3_SECRET_KEY": "compose-services-secret",
}
SECRETS = ("CLIPLINE_ADMIN_TOKEN", "CLIPLINE_WEBHOOK_SECRET", *S3_SECRETS)


def config(
    token: str | None,
    webhook_secret: str | None = WEBHOOK_SECRET,
    s3: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not installed: `make install` installs it (apt docker-compose)"
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(S3_SECRETS if s3 is None else s3)
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
    assert set(services) == {
        "nats", "nats-auth", "nats-provision", "minio", "minio-init", "jaeger", "simulator",
        *SERVICES,
    }  # fmt: skip
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
        assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
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


def test_services_get_their_own_minio_user_and_root_stays_with_minio() -> None:
    services = rendered()["services"]
    for name in (*SERVICES, "simulator"):
        env = services[name]["environment"]
        assert "MINIO_ROOT_USER" not in env
        assert "MINIO_ROOT_PASSWORD" not in env
        assert S3_SECRETS["MINIO_ROOT_PASSWORD"] not in str(env)
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["CLIPLINE_S3_ACCESS_KEY"] == S3_SECRETS["CLIPLINE_S3_ACCESS_KEY"]
        assert env["CLIPLINE_S3_SECRET_KEY"] == S3_SECRETS["CLIPLINE_S3_SECRET_KEY"]
    minio = services["minio"]["environment"]
    assert minio["MINIO_ROOT_USER"] == S3_SECRETS["MINIO_ROOT_USER"]
    assert "CLIPLINE_S3_SECRET_KEY" not in minio


def test_minio_init_creates_the_bucket_the_policy_and_the_services_user() -> None:
    init = rendered()["services"]["minio-init"]
    assert init["image"].startswith("minio/mc:RELEASE.")
    assert init["restart"] == "no"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    for step in ("mc mb --ignore-existing local/clipline-assets",
                 "mc admin policy create local clipline-assets /etc/clipline/minio-policy.json",
                 'mc admin user add local "$$CLIPLINE_S3_ACCESS_KEY"',
                 "mc admin policy attach local clipline-assets --user"):  # fmt: skip
        assert step in script
    assert any("deploy/minio-policy.json" in str(v) for v in init["volumes"])
    assert init["environment"] == S3_SECRETS


def test_the_services_policy_is_the_one_buckets_objects_and_lifecycle_only() -> None:
    policy = json.loads((ROOT / "deploy" / "minio-policy.json").read_text())
    allowed: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            allowed.setdefault(resource, set()).update(statement["Action"])
    assert set(allowed) == {"arn:aws:s3:::clipline-assets", "arn:aws:s3:::clipline-assets/*"}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= allowed[
        "arn:aws:s3:::clipline-assets/*"
    ]
    bucket = allowed["arn:aws:s3:::clipline-assets"]
    assert {"s3:ListBucket", "s3:PutLifecycleConfiguration"} <= bucket
    every = set().union(*allowed.values())
    assert not any("*" in action for action in every)
    assert not every & {"s3:DeleteBucket", "s3:CreateBucket", "s3:PutBucketPolicy"}


@pytest.mark.parametrize("missing", sorted(S3_SECRETS))
def test_without_an_s3_secret_compose_refuses_and_says_which_variable(missing: str) -> None:
    out = config(TOKEN, s3={k: v for k, v in S3_SECRETS.items() if k != missing})
    assert out.returncode != 0
    assert f"set {missing}" in out.stderr, out.stderr


def test_env_example_names_every_variable_compose_requires_and_gives_no_value() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert set(S3_SECRETS) <= required
    example = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert required <= set(example)
    assert all(value == "" for value in example.values())  # no secret ships with the project


def test_presigned_urls_name_minios_published_address() -> None:
    services = rendered()["services"]
    published = services["minio"]["ports"][0]
    host = (published["host_ip"], published["published"]) if isinstance(published, dict) else None
    for name in SERVICES:
        url = services[name]["environment"]["CLIPLINE_S3_PUBLIC_URL"]
        assert url == "http://127.0.0.1:9000", name
    if host is not None:
        assert url == f"http://{host[0]}:{host[1]}"

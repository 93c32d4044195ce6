"""docker-compose.yml is valid (Debian's docker-compose validates it without a daemon), and its
observability (Jaeger v2, Prometheus, the NATS exporter, Grafana) scrapes every process and
publishes no UI without a login."""

import functools
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
GRAFANA_PASSWORD = "compose-grafana-password"
SECRETS = ("CLIPLINE_ADMIN_TOKEN", "CLIPLINE_WEBHOOK_SECRET", "GRAFANA_ADMIN_PASSWORD", *S3_SECRETS)
METRICS_PORT = "9464"
PROCESSES = (*SERVICES, "simulator")  # every process serving /metrics
UI_OVERRIDE = ROOT / "deploy" / "compose-ui.yml"
SCRAPE = ROOT / "deploy" / "prometheus" / "compose-scrape.yml"


def config(
    token: str | None,
    webhook_secret: str | None = WEBHOOK_SECRET,
    s3: dict[str, str] | None = None,
    grafana_password: str | None = GRAFANA_PASSWORD,
    files: tuple[Path, ...] = (ROOT / "docker-compose.yml",),
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not installed: `make install` installs it (apt docker-compose)"
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(S3_SECRETS if s3 is None else s3)
    if token is not None:
        env["CLIPLINE_ADMIN_TOKEN"] = token
    if webhook_secret is not None:
        env["CLIPLINE_WEBHOOK_SECRET"] = webhook_secret
    if grafana_password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = grafana_password
    return subprocess.run(
        [exe, *(arg for f in files for arg in ("-f", str(f))), "config"],
        capture_output=True, text=True, check=False, cwd=ROOT, env=env,
    )  # fmt: skip


def rendered(*overrides: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(_rendered_text(overrides))
    return data


@functools.cache
def _rendered_text(overrides: tuple[Path, ...]) -> str:
    """docker-compose config's output with every secret set (once per file set: ~1 s each)."""
    out = config(TOKEN, files=(ROOT / "docker-compose.yml", *overrides))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_compose_has_infrastructure_simulator_and_every_service() -> None:
    services = rendered()["services"]
    assert set(services) == {
        "nats", "nats-auth", "nats-provision", "minio", "minio-init", "simulator", *SERVICES,
        "jaeger", "prometheus", "nats-exporter", "grafana",
    }  # fmt: skip
    assert "-js" in services["nats"]["command"]


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


# --- observability --------------------------------------------------------------------------


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port ('' address: every
    interface)."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port["published"]), str(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))  # a random host port on every interface
    return out


def test_every_published_port_is_on_loopback_and_only_the_expected_ones() -> None:
    services = rendered()["services"]
    ports = {(name, target) for name, svc in services.items() for _, _, target in published(svc)}
    assert ports == {
        ("intake", "8080"), ("pricing_guard", "8080"), ("simulator", "8000"), ("nats", "4222"),
        ("minio", "9000"), ("grafana", "3000"),
    }  # fmt: skip
    for name, svc in services.items():
        for host, _, _ in published(svc):
            assert host == "127.0.0.1", f"{name} published beyond loopback"


def test_uis_without_a_login_and_metrics_listeners_are_not_published() -> None:
    services = rendered()["services"]
    for name in ("jaeger", "prometheus", "nats-exporter"):
        assert not published(services[name]), name
    assert all(target != "9001" for _, _, target in published(services["minio"]))  # console
    for name in PROCESSES:
        assert all(target != METRICS_PORT for _, _, target in published(services[name])), name


def test_the_ui_override_publishes_jaeger_prometheus_and_minios_console_on_loopback_only() -> None:
    services = rendered(UI_OVERRIDE)["services"]
    assert [(h, t) for h, _, t in published(services["jaeger"])] == [("127.0.0.1", "16686")]
    assert [(h, t) for h, _, t in published(services["prometheus"])] == [("127.0.0.1", "9090")]
    assert ("127.0.0.1", "9001") in [(h, t) for h, _, t in published(services["minio"])]
    for name, svc in services.items():
        assert all(host == "127.0.0.1" for host, _, _ in published(svc)), name


def test_grafana_needs_a_login_with_a_password_that_has_no_default() -> None:
    grafana = rendered()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == GRAFANA_PASSWORD
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert not any("ANONYMOUS" in k and v != "false" for k, v in env.items())
    assert "GF_AUTH_DISABLE_LOGIN_FORM" not in env
    services = rendered()["services"]
    others = [n for n in services if n != "grafana"]
    assert all(GRAFANA_PASSWORD not in str(services[n].get("environment")) for n in others)


def test_without_a_grafana_password_compose_refuses_and_says_which_variable() -> None:
    out = config(TOKEN, grafana_password=None)
    assert out.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD" in out.stderr, out.stderr


def test_grafana_is_provisioned_from_deploy_grafana() -> None:
    grafana = rendered()["services"]["grafana"]
    volumes = [str(v) for v in grafana["volumes"]]
    assert any(
        v.endswith("deploy/grafana/provisioning:/etc/grafana/provisioning:ro") for v in volumes
    )
    assert any(
        v.endswith("deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro") for v in volumes
    )
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy" / "grafana" / "dashboards" / Path(home).name).is_file()


def test_jaeger_is_v2_receiving_otlp_inside_the_network() -> None:
    services = rendered()["services"]
    jaeger = services["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")
    assert "all-in-one" not in jaeger["image"]
    assert jaeger["command"] == ["--config", "/etc/jaeger/config.yaml"]
    assert any(str(v).endswith("deploy/jaeger/config.yaml:/etc/jaeger/config.yaml:ro")
               for v in jaeger["volumes"])  # fmt: skip
    cfg = yaml.safe_load((ROOT / "deploy" / "jaeger" / "config.yaml").read_text())
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert cfg["extensions"]["jaeger_query"]["http"]["endpoint"].endswith(":16686")
    pipeline = cfg["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["exporters"] == ["jaeger_storage_exporter"]
    storage = cfg["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert storage in cfg["extensions"]["jaeger_storage"]["backends"]
    assert cfg["extensions"]["jaeger_query"]["storage"]["traces"] == storage
    for name in SERVICES:  # the services export OTLP/HTTP to it
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_every_process_serves_metrics_inside_the_network_and_prometheus_scrapes_it() -> None:
    services = rendered()["services"]
    scrape = yaml.safe_load(SCRAPE.read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    targets = {t for cfg in jobs["clipline"]["static_configs"] for t in cfg["targets"]}
    assert targets == {f"{name}:{METRICS_PORT}" for name in PROCESSES}
    for cfg in jobs["clipline"]["static_configs"]:  # labelled as `clipline up --observe` does
        assert cfg["targets"] == [f"{cfg['labels']['process']}:{METRICS_PORT}"]
    for name in PROCESSES:
        env = services[name]["environment"]
        assert env["CLIPLINE_METRICS_HOST"] == "0.0.0.0", name
        assert env["CLIPLINE_METRICS_PORT"] == METRICS_PORT, name
    nats_targets = {t for cfg in jobs["nats"]["static_configs"] for t in cfg["targets"]}
    assert nats_targets == {"nats-exporter:7777"}


def test_the_nats_exporter_reads_the_monitoring_port_with_jetstream() -> None:
    services = rendered()["services"]
    command = services["nats-exporter"]["command"]
    assert command[-1] == "http://nats:8222"
    assert {"-varz", "-connz", "-jsz=all"} <= set(command)
    assert command[command.index("-port") + 1] == "7777"
    assert "-m" in services["nats"]["command"]
    assert services["nats"]["command"][services["nats"]["command"].index("-m") + 1] == "8222"
    assert services["nats-exporter"]["depends_on"]["nats"]["condition"] == "service_healthy"


def test_prometheus_loads_the_scrape_config_and_the_shared_rules_side_by_side() -> None:
    prometheus = rendered()["services"]["prometheus"]
    mounts = {
        Path(str(v).split(":")[0]).relative_to(ROOT).as_posix(): str(v).split(":")[1]
        for v in prometheus["volumes"]
        if str(v).startswith("/")
    }
    config_in = mounts["deploy/prometheus/compose-scrape.yml"]
    rules_in = mounts["deploy/prometheus/clipline-rules.yml"]
    assert f"--config.file={config_in}" in prometheus["command"]
    scrape = yaml.safe_load(SCRAPE.read_text())
    assert scrape["rule_files"] == [Path(rules_in).name]
    assert Path(rules_in).parent == Path(config_in).parent  # relative to the config file


def test_the_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian's prometheus package: make system-deps)")
    out = subprocess.run(
        [promtool, "check", "config", str(SCRAPE)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout + out.stderr


def test_every_image_is_pinned_to_a_version_never_latest() -> None:
    for name, svc in rendered(UI_OVERRIDE)["services"].items():
        image = svc["image"]
        if image == "clipline:local":  # built from deploy/Dockerfile
            assert "build" in svc or name in ("nats-auth", "nats-provision"), name
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} is not pinned to a version"


def test_docs_deploy_lists_every_published_port_and_every_pinned_observability_image() -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    services = rendered()["services"]
    table = {
        line.split("|")[1].strip() for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|", line)
    }
    assert table == {port for svc in services.values() for _, port, _ in published(svc)}
    for name in ("jaeger", "prometheus", "nats-exporter", "grafana"):
        assert f"`{services[name]['image']}`" in text, name

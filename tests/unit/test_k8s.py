"""deploy/k8s validates against the Kubernetes schemas (offline, kubernetes-validate) and agrees
with docker-compose.yml and the code: images, commands, env names, creds paths, ports, probes,
resources, PDBs, NetworkPolicies, and KEDA ScaledObjects on each service's own consumers."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from shared.consume import STOP_GRACE_SECONDS
from shared.identities import SERVICES as IDENTITIES
from shared.metrics import instruments, series_names
from shared.streams import JOBS_STREAM_NAME, REQUESTS_STREAM_NAME

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPONENTS = ("keda", "simulator")
SERVICES = ("intake", "pricing_guard", "submitter", "poller", "storage")
K8S_VERSION = "1.33"
METRICS_PORT = 9464
HTTP_PORT = 8080

Doc = dict[str, Any]


def k8s_name(service: str) -> str:
    return service.replace("_", "-")


def load_all(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@functools.cache
def kustomization(folder: Path) -> Doc:
    data: Doc = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return data


@functools.cache
def base() -> tuple[Doc, ...]:
    """The base's resources as kustomization.yaml lists them (without kustomize's edits)."""
    return tuple(d for f in kustomization(K8S)["resources"] for d in load_all(K8S / f))


@functools.cache
def component(name: str) -> tuple[Doc, ...]:
    folder = K8S / "components" / name
    return tuple(d for f in kustomization(folder)["resources"] for d in load_all(folder / f))


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployments() -> dict[str, Doc]:
    return of_kind(base() + component("simulator"), "Deployment")


def container(deployment: Doc) -> Doc:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    result: Doc = c
    return result


@functools.cache
def compose() -> Doc:
    data: Doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@functools.cache
def secret_keys() -> dict[str, set[str]]:
    return {
        d["metadata"]["name"]: set(d["stringData"]) for d in load_all(K8S / "secrets.example.yaml")
    }


def env_names(c: Doc) -> set[str]:
    """Every env name a container is given: envFrom's ConfigMap and Secrets, and env."""
    configmaps = of_kind(base(), "ConfigMap")
    names = {e["name"] for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            names |= secret_keys()[source["secretRef"]["name"]]
    return names


def every_manifest() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "nats-values.yaml")


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions In/Exists) matches `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
        assert e["operator"] in ("In", "Exists"), e
    return True


# --- the schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", every_manifest(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path}: empty"
    for doc in docs:
        if path.name == "kustomization.yaml" or doc.get("apiVersion", "").startswith("keda.sh/"):
            continue  # not Kubernetes API objects (kustomize's own; KEDA's CRD: checked below)
        # strict: unknown fields are errors too (a misspelt field would be silently dropped)
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    deployment = dict(deployments()["intake"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_base_lists_every_manifest_but_the_secret_templates_and_components() -> None:
    listed = {K8S / f for f in kustomization(K8S)["resources"]}
    top = {p for p in K8S.glob("*.yaml") if p.name not in ("kustomization.yaml",)}
    assert top - listed == {K8S / "secrets.example.yaml", K8S / "nats-values.yaml"}
    for name in COMPONENTS:
        assert kustomization(K8S / "components" / name)["kind"] == "Component"


def test_kustomize_renders_the_base_and_the_components(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize's rendering not checked here")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    rel = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"resources": [rel], "components": [f"{rel}/components/{c}" for c in COMPONENTS]}
        )
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    image = kustomization(K8S)["images"][0]
    want = f"{image['newName']}:{image['newTag']}"
    rendered = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(rendered) == {*map(k8s_name, SERVICES), "simulator"}
    for d in rendered.values():
        assert container(d)["image"] == want
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == "clipline", d["metadata"]["name"]
    (config,) = (d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["CLIPLINE_UPSTREAM_BASE_URL"] == "http://simulator:8000/v1"


# --- agreement with compose ----------------------------------------------------------------------


def test_one_deployment_per_service_and_the_simulator_dev_only() -> None:
    assert set(of_kind(base(), "Deployment")) == set(map(k8s_name, SERVICES))
    sim = deployments()["simulator"]
    assert sim["metadata"]["labels"]["clipline.io/dev-only"] == "true"
    assert "DEV ONLY" in (K8S / "components" / "simulator" / "kustomization.yaml").read_text()


@pytest.mark.parametrize("service", [*SERVICES, "simulator"])
def test_image_and_command_are_composes(service: str) -> None:
    composed = compose()["services"][service]
    c = container(deployments()[k8s_name(service)])
    assert composed["image"] == "clipline:local"
    assert c["image"] == "clipline"  # kustomize's images: set the registry name and tag
    assert {i["name"] for i in kustomization(K8S)["images"]} == {"clipline"}
    assert c["command"] == composed["command"]


@pytest.mark.parametrize("service", SERVICES)
def test_env_names_creds_path_and_ports_are_composes(service: str) -> None:
    composed = compose()["services"][service]
    deployment = deployments()[k8s_name(service)]
    c = container(deployment)
    assert env_names(c) == set(composed["environment"])
    creds = composed["environment"]["CLIPLINE_NATS_CREDS"]
    assert creds == f"/auth/creds/{service}.creds"
    assert {"name": "CLIPLINE_NATS_CREDS", "value": creds} in c["env"]
    # that file, from the service's own Secret, read-only; no other service's creds
    (mount,) = (m for m in c["volumeMounts"] if m["name"] == "nats-creds")
    assert mount["readOnly"] is True
    (volume,) = (
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "nats-creds"
    )
    assert volume["secret"]["secretName"] == f"clipline-nats-{k8s_name(service)}"
    (item,) = volume["secret"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == creds
    assert item["key"] in secret_keys()[volume["secret"]["secretName"]]
    # the uid compose runs it as
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(
        composed["user"]
    )
    # ports: the API (and /healthz) and /metrics, as compose's env says
    env = {**of_kind(base(), "ConfigMap")["clipline-env"]["data"]}
    assert env["CLIPLINE_HTTP_PORT"] == composed["environment"]["CLIPLINE_HTTP_PORT"] == "8080"
    assert env["CLIPLINE_METRICS_PORT"] == composed["environment"]["CLIPLINE_METRICS_PORT"]
    assert env["CLIPLINE_METRICS_HOST"] == composed["environment"]["CLIPLINE_METRICS_HOST"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": HTTP_PORT, "metrics": METRICS_PORT}


def test_the_simulators_env_names_are_composes() -> None:
    composed = compose()["services"]["simulator"]
    assert env_names(container(deployments()["simulator"])) == set(composed["environment"])


def test_secrets_are_placeholders_and_every_referenced_one_is_templated() -> None:
    for doc in load_all(K8S / "secrets.example.yaml"):
        assert doc["kind"] == "Secret"
        for key, value in doc["stringData"].items():
            assert re.fullmatch(r"<[^<>]+>", value), f"{doc['metadata']['name']}.{key}: {value}"
    for d in deployments().values():
        c = container(d)
        for e in c.get("env", []):
            if "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                assert ref["key"] in secret_keys()[ref["name"]]
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secret_keys()
    for doc in base():  # no Secret with a value in what `kubectl apply -k` applies
        assert doc["kind"] != "Secret"


# --- each Deployment's operation -----------------------------------------------------------------


@pytest.mark.parametrize("name", [*map(k8s_name, SERVICES), "simulator"])
def test_probes_resources_security_and_graceful_termination(name: str) -> None:
    deployment = deployments()[name]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] == "http"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    assert pod["terminationGracePeriodSeconds"] >= STOP_GRACE_SECONDS + 10
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # read-only root: /tmp is an emptyDir
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


@pytest.mark.parametrize("name", [*map(k8s_name, SERVICES), "simulator"])
def test_every_deployment_has_a_pdb_and_is_selected_by_network_policies(name: str) -> None:
    docs = base() + component("simulator")
    labels = deployments()[name]["spec"]["template"]["metadata"]["labels"]
    pdbs = list(of_kind(docs, "PodDisruptionBudget").values())
    assert [p for p in pdbs if selects(p["spec"]["selector"], labels)]
    policies = of_kind(docs, "NetworkPolicy")
    chosen = [n for n, p in policies.items() if selects(p["spec"]["podSelector"], labels)]
    assert "default-deny" in chosen
    assert set(chosen) - {"default-deny"}, f"{name}: only the default deny"
    # the selector of the Deployment matches its own pods
    assert selects(deployments()[name]["spec"]["selector"], labels)


def test_network_policies_deny_by_default_and_open_only_the_named_ports() -> None:
    policies = of_kind(base(), "NetworkPolicy")
    deny = policies["default-deny"]
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    # ingress: 8080 of intake and the poller from the ingress controller, 9464 from monitoring
    from_ingress = policies["from-ingress"]["spec"]
    for service, reached in (("intake", True), ("poller", True), ("pricing-guard", False)):
        labels = {"app.kubernetes.io/name": service}
        assert selects(from_ingress["podSelector"], labels) is reached
    (rule,) = from_ingress["ingress"]
    assert [p["port"] for p in rule["ports"]] == [HTTP_PORT]
    (monitoring,) = policies["clipline-base"]["spec"]["ingress"]
    assert [p["port"] for p in monitoring["ports"]] == [METRICS_PORT]
    ns = monitoring["from"][0]["namespaceSelector"]["matchLabels"]
    assert ns == {"kubernetes.io/metadata.name": "monitoring"}
    # only storage reaches S3 in the cluster
    storage = policies["storage-to-s3"]["spec"]["podSelector"]
    assert storage == {"matchLabels": {"app.kubernetes.io/name": "storage"}}


def test_services_for_intake_the_poller_and_the_internal_admin_api() -> None:
    services = of_kind(base(), "Service")
    assert set(services) == {"intake", "poller", "pricing-guard-admin"}
    for s in services.values():
        assert s["spec"]["type"] == "ClusterIP"
        (port,) = s["spec"]["ports"]
        assert port["targetPort"] == "http"
        assert any(
            selects(
                {"matchLabels": s["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"]
            )
            for d in deployments().values()
        )


# --- KEDA ----------------------------------------------------------------------------------------


def scaled_objects() -> dict[str, Doc]:
    return of_kind(component("keda"), "ScaledObject")


def test_every_scaled_object_targets_an_existing_deployment() -> None:
    assert set(scaled_objects()) == set(map(k8s_name, SERVICES))
    for name, so in scaled_objects().items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"]["name"] == name
        assert name in of_kind(base(), "Deployment")
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("service", ["intake", "pricing_guard", "submitter", "storage"])
def test_backlog_scalers_watch_exactly_the_services_own_consumers(service: str) -> None:
    identity = IDENTITIES[service]
    want = {(JOBS_STREAM_NAME, d) for d in identity.consumes} | {
        (REQUESTS_STREAM_NAME, d) for d in identity.consumes_requests
    }
    triggers = scaled_objects()[k8s_name(service)]["spec"]["triggers"]
    watched = {
        (t["metadata"]["stream"], t["metadata"]["consumer"])
        for t in triggers
        if t["type"] == "nats-jetstream"
    }
    assert watched == want
    for stream, durable in want:
        if stream == JOBS_STREAM_NAME:
            assert re.fullmatch(rf"{service}--job-[a-z_]+-v1", durable)
    for t in triggers:
        if t["type"] == "nats-jetstream":
            assert t["metadata"]["natsServerMonitoringEndpoint"].endswith(":8222")
            assert int(t["metadata"]["lagThreshold"]) > 0


def test_the_poller_scales_on_work_due_not_on_its_consumers_ack_pending() -> None:
    (trigger,) = scaled_objects()["poller"]["spec"]["triggers"]
    assert trigger["type"] == "prometheus"  # never nats-jetstream: every waiting job is ack-pending
    query = trigger["metadata"]["query"]
    used = set(re.findall(r"\b(clipline_[a-z_]+)\b", query))
    assert used == {"clipline_poller_polls_total", "clipline_poller_webhooks_total"}
    exported = {n for i in instruments().values() for n in series_names(i)}
    assert used <= exported  # names the services really export
    assert "clipline_poller_waiting" not in query


# --- the NATS chart's values ---------------------------------------------------------------------


def test_nats_values_a_3_node_jetstream_cluster_with_claplines_operator_mode_auth() -> None:
    values: Doc = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    config = values["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    store = config["jetstream"]["fileStore"]
    assert config["jetstream"]["enabled"]
    assert store["enabled"]
    assert store["pvc"]["enabled"]
    assert values["promExporter"]["enabled"] is True
    assert config["monitor"] == {"enabled": True, "port": 8222}  # KEDA reads /jsz there
    # deploy/nats.conf's settings: its include, payload and control line
    conf = (ROOT / "deploy" / "nats.conf").read_text()
    assert "include auth/nats-auth.conf" in conf
    merge = config["merge"]
    assert merge["00$include"] == "../nats-auth/nats-auth.conf"  # from /etc/nats-config
    assert "max_payload: 8388608" in conf
    assert merge["max_payload"] == "<< 8MB >>"
    assert f"max_control_line: {merge['max_control_line']}" in conf
    # the chart's resolver off: nats-auth.conf brings its own (full, on the JetStream PVC)
    assert config["resolver"]["enabled"] is False
    (mount,) = (p["value"] for p in values["container"]["patch"])
    (volume,) = (p["value"] for p in values["podTemplate"]["patch"])
    assert mount["mountPath"] == "/etc/nats-auth"
    assert mount["readOnly"] is True
    assert volume["name"] == mount["name"]
    assert "nats-auth.conf" in secret_keys()[volume["secret"]["secretName"]]

"""Kubernetes manifests: render the kustomizations, validate every object against the Kubernetes
API schema, run checkov, and pin the invariants that zero-downtime operation depends on.

No kustomize binary ships in a registry package usable here, so `render` implements the subset
of kustomize the repository uses (resources, namespace, images) and refuses anything else.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.app import create_app
from service.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
RELEASE = K8S / "overlays" / "release"
MONITORING = K8S / "monitoring"

# Newest Kubernetes release whose schemas kubernetes-validate ships (kubernetes-validate --help).
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "sre-microservice"
APP_LABELS = {"app.kubernetes.io/name": "sre-microservice"}
# Seconds between the end of in-flight work and SIGKILL that the grace period must leave.
SHUTDOWN_MARGIN_S = 5

CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
SUPPORTED_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}


# --- rendering -------------------------------------------------------------------------------


def _load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _split_image(image: str) -> str:
    """The image name without tag or digest."""
    name = image.split("@", 1)[0]
    last_segment = name.rsplit("/", 1)[-1]
    if ":" in last_segment:
        name = name[: len(name) - len(last_segment)] + last_segment.split(":", 1)[0]
    return name


def _set_images(documents: list[dict], images: list[dict]) -> None:
    for document in documents:
        pod_spec = document.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
            for image in images:
                current_name = _split_image(container["image"])
                if current_name != image["name"]:
                    continue
                new_name = image.get("newName", current_name)
                if "digest" in image:
                    container["image"] = f"{new_name}@{image['digest']}"
                elif "newTag" in image:
                    container["image"] = f"{new_name}:{image['newTag']}"
                else:
                    container["image"] = new_name + container["image"][len(current_name) :]


def render(directory: Path) -> list[dict]:
    """`kustomize build directory`, for the kustomize fields this repository uses."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZE_FIELDS
    if unsupported:
        raise NotImplementedError(
            f"{directory}/kustomization.yaml uses {sorted(unsupported)}: extend render() in {__file__}"
        )
    documents: list[dict] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        documents.extend(render(path) if path.is_dir() else _load_documents(path))
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED_KINDS:
                document["metadata"]["namespace"] = kustomization["namespace"]
    _set_images(documents, kustomization.get("images", []))
    return documents


def _key(document: dict) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


BASE_DOCUMENTS = render(BASE)
RELEASE_DOCUMENTS = render(RELEASE)
MONITORING_DOCUMENTS = render(MONITORING)


def _one(documents: list[dict], kind: str) -> dict:
    matches = [document for document in documents if document["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


DEPLOYMENT = _one(BASE_DOCUMENTS, "Deployment")
POD_SPEC = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD_SPEC["containers"][0]
SETTINGS = _one(BASE_DOCUMENTS, "ConfigMap")["data"]
SERVICE = _one(BASE_DOCUMENTS, "Service")


def _labels_match(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- rendering and schema --------------------------------------------------------------------


def test_base_kustomization_lists_every_manifest_in_the_directory():
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_base_renders_the_expected_objects():
    assert sorted(_key(document) for document in BASE_DOCUMENTS) == sorted(
        f"{kind}/sre-microservice"
        for kind in (
            "Namespace",
            "ConfigMap",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Ingress",
        )
    )


@pytest.mark.parametrize(
    "document",
    [pytest.param(d, id=f"base:{_key(d)}") for d in BASE_DOCUMENTS]
    + [pytest.param(d, id=f"release:{_key(d)}") for d in RELEASE_DOCUMENTS],
)
def test_manifest_is_valid_for_the_kubernetes_api_in_strict_mode(document):
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{_key(document)} is invalid for Kubernetes {KUBERNETES_VERSION}: {error.message}")


@pytest.mark.parametrize("path", sorted(BASE.glob("*.yaml")), ids=lambda path: path.name)
def test_namespaced_source_manifests_name_their_namespace(path):
    # Explicit even though kustomize sets it: checkov and `kubectl apply -f` read the raw files.
    for document in _load_documents(path):
        if document["kind"] not in CLUSTER_SCOPED_KINDS and document["kind"] != "Kustomization":
            assert document["metadata"].get("namespace") == NAMESPACE, _key(document)


def test_release_overlay_pins_the_image_by_digest_and_changes_nothing_else():
    assert CONTAINER["image"] == "sre-microservice:1.0.0"
    release_container = _one(RELEASE_DOCUMENTS, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert re.fullmatch(r"sre-microservice@sha256:[0-9a-f]{64}", release_container["image"])
    release_without_image = copy.deepcopy(RELEASE_DOCUMENTS)
    _one(release_without_image, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] = CONTAINER["image"]
    assert release_without_image == BASE_DOCUMENTS


def test_image_transform_follows_kustomize_semantics():
    def transformed(image: str, rule: dict) -> str:
        documents = [{"spec": {"template": {"spec": {"containers": [{"image": image}]}}}}]
        _set_images(documents, [rule])
        return documents[0]["spec"]["template"]["spec"]["containers"][0]["image"]

    digest = "sha256:" + "ab" * 32
    assert transformed("sre-microservice:1.0.0", {"name": "sre-microservice", "digest": digest}) == (
        f"sre-microservice@{digest}"
    )
    assert transformed(
        "sre-microservice:1.0.0", {"name": "sre-microservice", "newName": "registry:5000/team/sre-microservice"}
    ) == ("registry:5000/team/sre-microservice:1.0.0")
    assert transformed("registry:5000/other:2", {"name": "sre-microservice", "newTag": "9"}) == "registry:5000/other:2"


# --- invariants zero-downtime operation depends on -----------------------------------------


def test_rolling_update_never_reduces_capacity():
    strategy = DEPLOYMENT["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] == 1


def test_replica_count_is_left_to_the_autoscaler():
    assert "replicas" not in DEPLOYMENT["spec"]
    target = _one(BASE_DOCUMENTS, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT["metadata"]["name"])


def test_grace_period_covers_prestop_drain_delay_and_in_flight_requests():
    prestop_s = CONTAINER["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = prestop_s + float(SETTINGS["SHUTDOWN_DELAY_S"]) + float(SETTINGS["GRACEFUL_TIMEOUT_S"]) + SHUTDOWN_MARGIN_S
    assert prestop_s >= 5, "the endpoint removal needs seconds to reach kube-proxy and the ingress"
    assert POD_SPEC["terminationGracePeriodSeconds"] >= needed


def test_probes_use_the_health_endpoints():
    def path_and_port(probe: str) -> tuple[str, str]:
        return CONTAINER[probe]["httpGet"]["path"], CONTAINER[probe]["httpGet"]["port"]

    assert path_and_port("startupProbe") == ("/health", "http")
    assert path_and_port("livenessProbe") == ("/health", "http")
    assert path_and_port("readinessProbe") == ("/ready", "http")
    # Liveness must tolerate a slow answer or two before the kubelet restarts the pod.
    assert CONTAINER["livenessProbe"]["failureThreshold"] >= 3


def test_container_listens_where_the_service_and_settings_say():
    assert CONTAINER["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert int(SETTINGS["PORT"]) == 8000
    assert CONTAINER["envFrom"] == [{"configMapRef": {"name": _one(BASE_DOCUMENTS, "ConfigMap")["metadata"]["name"]}}]
    assert SERVICE["spec"]["type"] == "ClusterIP"
    assert SERVICE["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert _labels_match(SERVICE["spec"]["selector"], DEPLOYMENT["spec"]["template"]["metadata"]["labels"])


def test_settings_are_accepted_by_the_service():
    known = {field.name.upper() for field in dataclasses.fields(Settings)}
    assert set(SETTINGS) <= known, f"unknown settings: {sorted(set(SETTINGS) - known)}"
    cpu_limit = CONTAINER["resources"]["limits"]["cpu"]
    settings = load_settings([], {**SETTINGS, "POOL_WORKERS": cpu_limit})
    assert settings.pool_workers == int(cpu_limit)
    assert settings.port == CONTAINER["ports"][0]["containerPort"]


def test_no_service_links_reach_the_settings():
    # Kubernetes would set <NAME>_PORT=tcp://<ip>:<port> and the like for every Service in the
    # namespace; one named "metrics" would make METRICS_PORT invalid and stop every pod.
    assert POD_SPEC["enableServiceLinks"] is False
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        load_settings([], {**SETTINGS, "METRICS_PORT": "tcp://10.96.0.10:80"})


def test_inline_thresholds_are_the_measured_defaults():
    # bench.pools sets the defaults (docs/performance.md); a copy in the manifest must not go stale,
    # so INLINE_THRESHOLD_BYTES is left out and the one that must be set is kept equal.
    assert "INLINE_THRESHOLD_BYTES" not in SETTINGS
    assert int(SETTINGS["INLINE_ALONE_THRESHOLD_BYTES"]) == Settings().inline_alone_threshold_bytes


def test_pool_workers_follow_the_cpu_limit():
    pool_workers = {env["name"]: env for env in CONTAINER["env"]}["POOL_WORKERS"]
    assert pool_workers["valueFrom"]["resourceFieldRef"] == {
        "containerName": CONTAINER["name"],
        "resource": "limits.cpu",
        "divisor": "1",
    }
    assert "POOL_WORKERS" not in SETTINGS


def test_resources_are_bounded():
    resources = CONTAINER["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert resources["limits"]["memory"] == "1Gi", "the service's peak RSS target is < 1 GiB"


def test_pod_runs_unprivileged_on_a_read_only_root():
    pod_security = POD_SPEC["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (10001, 10001)
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    container_security = CONTAINER["securityContext"]
    assert container_security["runAsNonRoot"] is True
    assert (container_security["runAsUser"], container_security["runAsGroup"]) == (10001, 10001)
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["capabilities"] == {"drop": ["ALL"]}
    assert container_security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert POD_SPEC["automountServiceAccountToken"] is False


def test_tmp_is_the_only_writable_path_and_lives_in_memory():
    assert CONTAINER["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    (volume,) = POD_SPEC["volumes"]
    assert volume["name"] == "tmp"
    assert volume["emptyDir"]["medium"] == "Memory"
    assert volume["emptyDir"]["sizeLimit"]


def test_ingress_limits_match_the_service_settings():
    ingress = _one(BASE_DOCUMENTS, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    body_size = re.fullmatch(r"(\d+)m", annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    assert body_size, "proxy-body-size is expected in nginx's MiB notation"
    assert int(body_size.group(1)) * 1024 * 1024 == int(SETTINGS["MAX_BODY_BYTES"])
    # The service's own deadline must end a slow analysis before the proxy gives up on it.
    read_timeout_s = int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    assert read_timeout_s > float(SETTINGS["COMPUTE_TIMEOUT_S"])
    # A failed attempt on a crashed or draining pod is retried once elsewhere, POST included.
    assert "non_idempotent" in annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"].split()
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-next-upstream-tries"]) == 2
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends and all(
        backend == {"name": SERVICE["metadata"]["name"], "port": {"name": "http"}} for backend in backends
    )


def test_ingress_routes_every_public_route_exactly_and_never_metrics():
    # ServiceMonitor scrapes /metrics on the pods; at the edge it must stay closed, as the local
    # nginx keeps it (docs/security.md). A Prefix "/" path would forward it to the internet.
    paths = [path for rule in _one(BASE_DOCUMENTS, "Ingress")["spec"]["rules"] for path in rule["http"]["paths"]]
    assert all(path["pathType"] == "Exact" for path in paths), paths
    routes = {route.path for route in create_app(Settings()).routes}
    assert "/metrics" in routes
    assert {path["path"] for path in paths} == routes - {"/metrics"}


def test_disruption_budget_and_network_policy_select_the_pods():
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    budget = _one(BASE_DOCUMENTS, "PodDisruptionBudget")["spec"]
    assert _labels_match(budget["selector"]["matchLabels"], pod_labels)
    assert budget["maxUnavailable"] == 1
    policy = _one(BASE_DOCUMENTS, "NetworkPolicy")["spec"]
    assert _labels_match(policy["podSelector"]["matchLabels"], pod_labels)


def test_network_policy_admits_only_the_ingress_controller_and_monitoring():
    policy = _one(BASE_DOCUMENTS, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy.get("egress", []) == []
    peers = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert peers == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"port": "http", "protocol": "TCP"}]]


# --- Prometheus Operator resources (not in kubernetes-validate's schema set) -----------------


def test_service_monitor_scrapes_the_service_metrics_endpoint():
    monitor = _one(MONITORING_DOCUMENTS, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    spec = monitor["spec"]
    assert _labels_match(spec["selector"]["matchLabels"], SERVICE["metadata"]["labels"])
    assert spec["namespaceSelector"]["matchNames"] == [SERVICE["metadata"]["namespace"]]
    service_ports = {port["name"] for port in SERVICE["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"


def test_prometheus_rule_is_well_formed():
    rule = _one(MONITORING_DOCUMENTS, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for entry in group["rules"]:
            assert ("record" in entry) != ("alert" in entry), entry
            assert set(entry) <= {"record", "alert", "expr", "for", "labels", "annotations"}, entry
            assert isinstance(entry["expr"], str) and entry["expr"].strip()


# --- checkov ---------------------------------------------------------------------------------


def _checkov(*directories: Path) -> list[dict]:
    checkov = Path(sys.executable).with_name("checkov")
    if not checkov.exists():
        pytest.fail(f"checkov is not installed next to {sys.executable} (pip install -e '.[test]')")
    command = [str(checkov), "--framework", "kubernetes", "--compact", "--skip-download", "-o", "json"]
    for directory in directories:
        command += ["-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode in (0, 1), f"checkov crashed:\n{result.stderr}"
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


def _failures(report: dict) -> list[str]:
    return [
        f"{check['check_id']} {check['check_name']} ({check['resource']} in {check['file_path']})"
        for check in report["results"]["failed_checks"]
    ]


@pytest.mark.slow
def test_checkov_finds_no_failed_checks_in_k8s():
    (report,) = _checkov(K8S)
    assert report["check_type"] == "kubernetes"
    assert report["summary"]["resource_count"] >= len(BASE_DOCUMENTS) + len(MONITORING_DOCUMENTS)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["failed"] == 0, "\n".join(_failures(report))
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason.split()) >= 5, f"{skipped['check_id']} is skipped without a written reason"


@pytest.mark.slow
def test_checkov_passes_the_release_render_without_any_skip(tmp_path):
    # The base skips the digest checks because it pins a tag; the release render must not need it.
    for index, document in enumerate(copy.deepcopy(RELEASE_DOCUMENTS)):
        annotations = document["metadata"].get("annotations", {})
        for name in [name for name in annotations if name.startswith("checkov.io/skip")]:
            del annotations[name]
        (tmp_path / f"{index:02d}-{document['kind'].lower()}.yaml").write_text(yaml.safe_dump(document))
    (report,) = _checkov(tmp_path)
    assert report["summary"]["resource_count"] >= len(RELEASE_DOCUMENTS)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["failed"] == 0, "\n".join(_failures(report))
    assert report["summary"]["skipped"] == 0

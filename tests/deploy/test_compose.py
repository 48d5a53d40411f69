"""The local stack (docker-compose.yml): valid for Compose, and consistent with the image and nginx.

No container engine runs here: `docker-compose config` validates the file against the Compose
schema offline; the rest checks what the schema cannot (settings that must agree elsewhere).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require_tool
from tests.deploy.nginx_harness import render

COMPOSE_FILE = ROOT / "docker-compose.yml"
REPLICAS = ("app1", "app2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a duration in seconds, got {duration!r}"
    return int(match.group(1))


def test_compose_validates_against_the_compose_schema() -> None:
    docker_compose = require_tool("docker-compose")
    checked = subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("name", REPLICAS)
def test_replicas_run_the_image_as_it_runs_in_production(compose: dict, name: str) -> None:
    replica = compose["services"][name]
    assert replica["image"] == "sre-microservice:1.0.0"
    assert (ROOT / replica["build"]["context"] / "Dockerfile").is_file()
    assert replica["user"] == "10001:10001"
    assert replica["read_only"] is True
    assert replica["tmpfs"] == ["/tmp"]
    assert "ports" not in replica, "only the edge is published"
    environment = replica["environment"]
    # Docker's stop timeout must outlast the drain, or the replica is SIGKILLed mid-request.
    drain_s = float(environment["SHUTDOWN_DELAY_S"]) + float(environment["GRACEFUL_TIMEOUT_S"])
    assert _seconds(replica["stop_grace_period"]) > drain_s


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG])i?", size, re.IGNORECASE)
    assert match, f"expected a size like 512M or 1Gi, got {size!r}"
    return int(match.group(1)) * 1024 ** "KMG".index(match.group(2).upper()) * 1024


@pytest.mark.parametrize("name", REPLICAS)
def test_replicas_have_the_pods_resource_limits(compose: dict, name: str) -> None:
    # The same peak memory (P4: the whole tree, MAX_PENDING bodies) must fit in both.
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
    pod_limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    replica = compose["services"][name]
    limits = replica["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) == float(pod_limits["cpu"]) == float(replica["environment"]["POOL_WORKERS"])
    assert _bytes(limits["memory"]) == _bytes(pod_limits["memory"])


def test_replica_healthcheck_is_the_images(compose: dict) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    image_check = json.loads(re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", dockerfile).group(1))
    for name in REPLICAS:
        assert compose["services"][name]["healthcheck"]["test"] == ["CMD", *image_check]


def test_edge_is_the_only_public_entry_and_listens_on_loopback(compose: dict) -> None:
    published = {name: service.get("ports", []) for name, service in compose["services"].items()}
    assert published["nginx"] == ["127.0.0.1:8080:8080"]
    assert all(port.startswith("127.0.0.1:") for ports in published.values() for port in ports)


def test_nginx_environment_renders_the_same_config_as_render_py(compose: dict, tmp_path: Path) -> None:
    # The image renders the template with envsubst; render.py must produce the same file from
    # the same values, so what the tests prove about nginx holds for the compose stack.
    envsubst = require_tool("envsubst")
    nginx = compose["services"]["nginx"]
    environment = {key: str(value) for key, value in nginx["environment"].items()}
    template_mount = next(volume for volume in nginx["volumes"] if volume.endswith(".template:ro"))
    template = ROOT / template_mount.split(":")[0]
    assert template == render.TEMPLATE
    assert set(render.PLACEHOLDER.findall(template.read_text())) <= set(environment)

    names = " ".join(f"${{{name}}}" for name in environment)
    by_envsubst = subprocess.run(
        [envsubst, names], input=template.read_text(), env=environment, capture_output=True, text=True, check=True
    ).stdout
    by_renderer = render.render_config(
        listen=environment["NGINX_LISTEN"],
        upstreams=[f"{name}:8000" for name in REPLICAS],
        runtime_dir=Path(environment["NGINX_RUNTIME_DIR"]),
        error_log=Path(environment["NGINX_ERROR_LOG"]),
        access_log=Path(environment["NGINX_ACCESS_LOG"]),
        worker_processes=environment["NGINX_WORKER_PROCESSES"],
    )

    def lines(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines()]

    assert lines(by_envsubst) == lines(by_renderer)
    assert nginx["command"] == ["nginx", "-c", f"{environment['NGINX_ENVSUBST_OUTPUT_DIR']}/nginx.conf"]


def test_body_limit_agrees_between_replicas_and_edge(compose: dict) -> None:
    config = render.TEMPLATE.read_text()
    edge_limit_mib = int(re.search(r"client_max_body_size (\d+)m;", config).group(1))
    for name in REPLICAS:
        assert int(compose["services"][name]["environment"]["MAX_BODY_BYTES"]) == edge_limit_mib * 1024 * 1024


def test_locust_through_the_edge_probes_only_what_the_edge_serves() -> None:
    # The edge answers /metrics 404 (test_nginx_config.py), which Locust would count as failures:
    # 1 % of the tasks at the default probe fraction, the whole default failure budget.
    locust = yaml.safe_load((ROOT / "deploy" / "compose" / "locust.yml").read_text())["services"]["locust-master"]
    assert "--host=http://nginx:8080" in locust["command"]
    probe_paths = re.fullmatch(r"\$\{LOCUST_PROBE_PATHS:-(.*)\}", locust["environment"]["LOCUST_PROBE_PATHS"])
    assert probe_paths, "LOCUST_PROBE_PATHS needs a default for the edge"
    assert "/metrics" not in probe_paths.group(1).split(",")


def test_prometheus_config_is_valid_and_scrapes_every_replica(compose: dict) -> None:
    promtool = require_tool("promtool")
    prometheus = compose["services"]["prometheus"]
    config_mount = next(volume for volume in prometheus["volumes"] if volume.endswith("prometheus.yml:ro"))
    config_path = ROOT / config_mount.split(":")[0]
    checked = subprocess.run([promtool, "check", "config", str(config_path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    config = yaml.safe_load(config_path.read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "sre-microservice")
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    assert targets == {f"{name}:8000" for name in REPLICAS}

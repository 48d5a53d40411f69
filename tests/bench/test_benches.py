"""Each benchmark runs end to end on a tiny configuration and writes its outputs.

These check that the benches work, not how fast anything is: no timing is asserted, and a bench
whose target is missed on this run still has to produce its report (exit status 0 or 1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.kernels import EDGE_NUMBERS, takes_over_at
from bench.pools import crossover, lone_inline_limit
from compute import decoding, numeric
from compute import text as text_kernel
from tests.conftest import ROOT, require_tool

pytestmark = pytest.mark.slow


def run_bench(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_outputs(out: Path, name: str, pngs: list[str]) -> dict:
    assert (out / f"{name}.md").read_text().startswith("|") or "###" in (out / f"{name}.md").read_text()
    data = json.loads((out / f"{name}.json").read_text())
    assert data["machine"]["python"]
    for png in pngs:
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    return data


def test_kernels_bench(tmp_path: Path) -> None:
    done = run_bench("bench.kernels", "--quick", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    data = assert_outputs(tmp_path, "kernels", ["kernels.png"])
    assert [row["count"] for row in data["numeric"]] == [10, 1000]
    # The kernel is accurate where the naive one-pass variance is not (data offset by 1e9).
    assert all(row["kernel_stdev_error"] <= 1e-12 for row in data["numeric"])
    # Both paths of each kernel are timed on each side of its switch, which is read from the code.
    assert {(row["kernel"], row["size"]) for row in data["cutover"]["rows"]} == {
        ("numbers", 16),
        ("numbers", 512),
        ("text", 500),
        ("text", 4000),
        ("decoding", 1024),
        ("decoding", 16384),
    }
    assert all(row["short_us"] > 0 and row["vectorised_us"] > 0 for row in data["cutover"]["rows"])
    assert {found["kernel"]: found["in_code"] for found in data["cutover"]["summary"]} == {
        "numbers": numeric._FEW + 1,
        "text": text_kernel._VECTORISED_FROM,
        "decoding": decoding.BULK_DECODE_FROM,
    }
    # Each number near the float range's ends, in a valid body and in one msgspec must judge.
    assert {(row["number"], row["body"]) for row in data["edges"]} == {
        (number, body) for number in EDGE_NUMBERS for body in ("valid", "error at the end")
    }
    assert all(row["msgspec_us"] > 0 and row["service_us"] > 0 for row in data["edges"])


def test_the_cutover_is_where_the_vectorised_path_stays_faster() -> None:
    def ladder(*timings: tuple[int, float, float]) -> list[dict[str, object]]:
        return [{"size": size, "short_us": short, "vectorised_us": vectorised} for size, short, vectorised in timings]

    # A lucky win below the switch does not count; the last loss does.
    assert takes_over_at(ladder((64, 5, 4), (128, 9, 10), (256, 20, 15), (512, 40, 25))) == 256
    assert takes_over_at(ladder((64, 5, 6), (128, 9, 10))) is None
    assert takes_over_at(ladder((64, 7, 6), (128, 12, 10))) == 64


def test_pools_bench_in_process(tmp_path: Path) -> None:
    done = run_bench("bench.pools", "--quick", "--view", "in-process", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    data = assert_outputs(tmp_path, "pools", ["pools-in-process.png"])
    modes = {row["mode"] for row in data["in-process"]["rows"]}
    assert modes == {"inline", "thread", "process", "adaptive"}
    assert all(row["jobs"] >= 1 for row in data["in-process"]["rows"])
    concurrencies = {row["concurrency"] for row in data["in-process"]["rows"]}
    assert {found["concurrency"] for found in data["in-process"]["crossover_by_clients"]} == concurrencies


def test_pools_bench_over_http(tmp_path: Path) -> None:
    require_tool("wrk")
    done = run_bench(
        "bench.pools",
        "--view",
        "http",
        "--sizes",
        "5:100",
        "--concurrency",
        "2",
        "--seconds",
        "1",
        "--repeats",
        "1",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = assert_outputs(tmp_path, "pools", ["pools-http.png"])
    rows = data["http"]["rows"]
    assert {row["mode"] for row in rows} == {"inline", "thread", "process", "adaptive"}
    assert all(row["rps"] > 0 and row["non_2xx"] == 0 for row in rows)


def test_pools_bench_p5(tmp_path: Path) -> None:
    done = run_bench(
        "bench.pools", "--target", "p5", "--target-seconds", "0.5", "--repeats", "1", "--out", str(tmp_path)
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "P5: PASS" in done.stdout or "P5: FAIL" in done.stdout
    data = json.loads((tmp_path / "pools.json").read_text())
    assert data["p5"]["ratio"] > 0
    assert data["p5"]["thread_speedup"] > 0 and data["p5"]["process_speedup"] > 0
    assert set(data["p5"]["slowdown_two_at_once"]) == {"python loop", "analysis"}
    cpu = data["p5"]["process_cpu_per_job_ms"]
    assert set(cpu) == {"pool processes", "event loop", "executor threads"}
    assert cpu["pool processes"] > 0  # the analyses ran in the pool, not here


def test_http_bench_p1(tmp_path: Path) -> None:
    require_tool("wrk")
    done = run_bench("bench.http", "--target", "p1", "--quick", "--out", str(tmp_path))
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "P1: PASS" in done.stdout or "P1: FAIL" in done.stdout
    data = assert_outputs(tmp_path, "http", ["http.png"])
    (row,) = data["ceiling"]
    assert row["ceiling"]["non_2xx"] == 0 and row["service"]["non_2xx"] == 0
    assert row["ratio"] > 0
    assert row["without_analysis"]["non_2xx"] == 0 and row["without_analysis_ratio"] > 0


def _rows(rps_by_size: dict[int, tuple[float, float]]) -> list[dict]:
    return [
        {"concurrency": 4, "body_bytes": size, "mode": mode, "rps": rps}
        for size, pair in rps_by_size.items()
        for mode, rps in zip(("inline", "process"), pair, strict=False)
    ]


def test_crossover_is_between_the_last_inline_win_and_a_lasting_process_win() -> None:
    # A process win at 2 kB that does not last is ignored; the cut-over lies between 27 kB and 270 kB.
    found = crossover(
        _rows({200: (900, 100), 2_000: (300, 310), 27_000: (200, 150), 270_000: (20, 35), 2_700_000: (2, 4)}),
        concurrency=4,
    )
    assert (found["inline_wins_up_to"], found["process_wins_from"]) == (27_000, 270_000)
    assert found["suggested_threshold_bytes"] == 64 * 1024


def test_crossover_when_inline_always_wins() -> None:
    found = crossover(_rows({200: (900, 100), 2_000: (300, 200)}), concurrency=4)
    assert found["process_wins_from"] is None and found["suggested_threshold_bytes"] is None


def _lone_rows(p50_ms_by_size: dict[int, float]) -> list[dict]:
    rows = [
        {"concurrency": 1, "body_bytes": size, "mode": "inline", "p50_ms": ms} for size, ms in p50_ms_by_size.items()
    ]
    # Other modes and concurrencies do not count.
    return [*rows, {"concurrency": 4, "body_bytes": 10, "mode": "inline", "p50_ms": 50.0}]


def test_lone_inline_limit_interpolates_the_budget_to_a_power_of_two() -> None:
    # 10 ms lies 70 % of the way from 3 ms at 700 kB to 13 ms at 2.3 MB; 1.74 MiB is nearer 2 than 1.
    found = lone_inline_limit(_lone_rows({70_000: 0.3, 700_000: 3.0, 2_300_000: 13.0, 18_000_000: 120.0}))
    assert found == {"budget_reached_at": 1_820_000, "suggested_bytes": 2 << 20}
    # 10 ms at 1.05 MB (1.0 MiB): nearer 1 MiB than 2.
    found = lone_inline_limit(_lone_rows({700_000: 3.0, 2_300_000: 35.0}))
    assert found == {"budget_reached_at": 1_050_000, "suggested_bytes": 1 << 20}


def test_lone_inline_limit_when_no_size_reaches_the_budget() -> None:
    found = lone_inline_limit(_lone_rows({70_000: 0.3, 700_000: 3.0}))
    assert found == {"budget_reached_at": None, "suggested_bytes": None}

"""WEB_CONCURRENCY=2: metrics add up across uvicorn workers, and the supervisor shuts down cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from bench.proctree import descendants, process_state, stat_fields
from tests.conftest import SEED_PAYLOAD, ServiceProcess, free_port, metric_value, require_tool, wait_until

pytestmark = pytest.mark.slow

WORKERS = 2
REQUESTS = 200


def both_workers_warm(service: ServiceProcess) -> bool:
    return service.log().count('"message": "service ready"') == WORKERS


def requests_by_worker(shared_dir: Path, route: str) -> Counter[int]:
    """POST requests to ``route`` that each worker counted, from the workers' own files."""
    counts: Counter[int] = Counter()
    for path in shared_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, count, _timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):
            if '"http_requests_total"' in key and f'"route":"{route}"' in key.replace(" ", ""):
                counts[pid] += int(count)
    return counts


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory):
    """A 2-worker service with its metrics on a separate port and a stale file in its metrics dir."""
    shared_dir = tmp_path_factory.mktemp("multiproc")
    stale = MmapedDict(str(shared_dir / "counter_999999.db"))
    stale.write_value(
        mmap_key(
            "http_requests_total",
            "http_requests_total",
            ["method", "route", "status"],
            ["POST", "/payload", "200"],
            "HTTP requests answered.",
        ),
        1000.0,
        0.0,
    )
    stale.close()
    metrics_port = free_port()
    service = ServiceProcess(
        env={
            "WEB_CONCURRENCY": str(WORKERS),
            "POOL_WORKERS": "1",
            "METRICS_PORT": str(metrics_port),
            "PROMETHEUS_MULTIPROC_DIR": str(shared_dir),
        }
    ).start(tmp_path_factory.mktemp("service"))
    wait_until(lambda: both_workers_warm(service), 30, interval=0.05, message="both workers ready")
    yield service, f"http://127.0.0.1:{metrics_port}/metrics", shared_dir
    service.stop()


def test_a_stale_metrics_file_is_removed_at_start(workers) -> None:
    _service, _metrics_url, shared_dir = workers
    assert not (shared_dir / "counter_999999.db").exists()


def test_requests_over_fresh_connections_add_up_across_workers(workers) -> None:
    service, metrics_url, shared_dir = workers
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)  # a new connection for each request
    with httpx.Client(base_url=service.url, timeout=10, limits=no_keep_alive) as client:
        for _ in range(REQUESTS):
            assert client.post("/payload", json=SEED_PAYLOAD).status_code == 200
    by_worker = requests_by_worker(shared_dir, "/payload")
    assert sum(by_worker.values()) == REQUESTS
    assert len(by_worker) == WORKERS, f"one worker served everything: {dict(by_worker)}"
    exposition = httpx.get(metrics_url, timeout=10).text
    assert metric_value(exposition, "http_requests_total", route="/payload", status="200") == REQUESTS
    assert metric_value(exposition, "analysis_jobs_total", mode="inline", outcome="ok") == REQUESTS
    assert metric_value(exposition, "http_request_duration_seconds_count", route="/payload") == REQUESTS
    # livesum: one pool worker in each web worker; livemin: every worker is ready.
    assert metric_value(exposition, "analysis_pool_workers") == WORKERS
    assert metric_value(exposition, "service_ready") == 1
    assert metric_value(exposition, "build_info") == 1


def test_the_metrics_port_is_served_by_the_supervisor_and_the_main_port_hides_metrics(workers) -> None:
    service, metrics_url, _shared_dir = workers
    assert httpx.get(f"{service.url}/metrics", timeout=10).status_code == 404
    assert httpx.get(metrics_url.replace("/metrics", "/other"), timeout=10).status_code == 404
    exposition = httpx.get(metrics_url, timeout=10).text
    pids = {
        int(sample.labels["pid"])
        for family in text_string_to_metric_families(exposition)
        if family.name == "process_resident_memory_bytes"
        for sample in family.samples
    }
    workers_pids = {pid for pid in service.descendants() if _parent(pid) == service.pid}
    assert service.pid in pids
    assert workers_pids <= pids and len(workers_pids) >= WORKERS


def test_promtool_accepts_the_merged_exposition(workers) -> None:
    promtool = require_tool("promtool")
    service, metrics_url, _shared_dir = workers
    httpx.post(f"{service.url}/payload", content=b"{", headers={"content-type": "application/json"}, timeout=10)
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=httpx.get(metrics_url, timeout=10).content,
        capture_output=True,
        timeout=30,
    )
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout.decode() + check.stderr.decode()


def test_a_killed_worker_is_replaced_and_its_live_gauges_dropped(workers) -> None:
    service, metrics_url, shared_dir = workers
    before = httpx.get(metrics_url, timeout=10).text
    victim = sorted(
        pid for pid in service.descendants() if _parent(pid) == service.pid and _is_web_worker(shared_dir, pid)
    )[0]
    orphans = descendants(victim)
    os.kill(victim, signal.SIGKILL)
    # A SIGKILLed worker cannot stop its pool: its forkserver and pool worker are left behind
    # (reported to the lead); end them here so the test leaves nothing running.
    for pid in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not (shared_dir / f"gauge_livesum_{victim}.db").exists(), 15, message="live gauges dropped")
    wait_until(lambda: both_workers_warm_again(service), 30, interval=0.05, message="a replacement worker")
    after = httpx.get(metrics_url, timeout=10).text
    # Counters keep what the dead worker counted; live gauges count only living workers.
    assert metric_value(after, "http_requests_total", route="/payload") >= metric_value(
        before, "http_requests_total", route="/payload"
    )
    wait_until(
        lambda: metric_value(httpx.get(metrics_url, timeout=10).text, "analysis_pool_workers") == WORKERS,
        30,
        message="analysis_pool_workers back to one per web worker",
    )


def both_workers_warm_again(service: ServiceProcess) -> bool:
    return service.log().count('"message": "service ready"') == WORKERS + 1


def test_sigterm_drains_every_worker_and_exits_zero(workers) -> None:
    service, _metrics_url, _shared_dir = workers
    children = service.descendants()
    assert children
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 0, service.log()[-3000:]
    wait_until(lambda: not any(_alive(pid) for pid in children), 10, message="no process left behind")
    assert "workers exited uncleanly" not in service.log()


def test_a_worker_that_dies_during_the_drain_has_its_live_gauges_dropped(start_service) -> None:
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    # SHUTDOWN_DELAY_S keeps the survivor draining (and serving) while its metrics are read.
    service = start_service(
        env={
            "WEB_CONCURRENCY": str(WORKERS),
            "POOL_WORKERS": "1",
            "METRICS_PORT": str(metrics_port),
            "SHUTDOWN_DELAY_S": "60",
        }
    )
    wait_until(lambda: both_workers_warm(service), 30, interval=0.05, message="both workers ready")

    def pool_workers() -> float:
        return metric_value(httpx.get(metrics_url, timeout=10).text, "analysis_pool_workers")

    wait_until(lambda: pool_workers() == WORKERS, 10, message="one pool worker per web worker")
    victim = min(pid for pid in service.descendants() if _parent(pid) == service.pid and b"spawn" in _cmdline(pid))
    orphans = descendants(victim)
    service.signal(signal.SIGTERM)
    wait_until(lambda: service.log().count("received: draining") == WORKERS, 10, message="both workers draining")
    os.kill(victim, signal.SIGKILL)
    for pid in orphans:  # its forkserver and pool worker, which it cannot stop now
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pool_workers() == 1, 15, message="the dead worker's live gauges dropped")
    service.signal(signal.SIGINT)  # the survivor's drain ends now
    assert service.wait(timeout=30) == 1, service.log()[-3000:]
    assert "workers exited uncleanly" in service.log()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _parent(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


def _is_web_worker(shared_dir: Path, pid: int) -> bool:
    return (shared_dir / f"counter_{pid}.db").exists()


def _alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z")

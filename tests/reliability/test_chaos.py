"""Pool workers that hang or die: every request is answered, the pool heals, nothing leaks."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.proctree import cpu_seconds, process_state
from tests.conftest import scrape_metric, wait_until
from tests.reliability.helpers import (
    JSON,
    assert_problem,
    numbers_body,
    pool_workers,
)

COMPUTE_TIMEOUT_S = 5.0
# A body past the inline threshold goes to the pool even when it arrives alone.
POOL_FOR_EVERY_LARGE_BODY = {"POOL_WORKERS": "2", "INLINE_ALONE_THRESHOLD_BYTES": "0"}
# A body whose analysis keeps a worker busy for a few hundred milliseconds.
HEAVY_BODY = numbers_body(1_000_000, text="Heavy text. " * 200_000)


def _busy_worker(workers: set[int], before: dict[int, float]) -> int | None:
    for pid in workers:
        if cpu_seconds(pid) > before[pid]:
            return pid
    return None


def test_a_hung_worker_is_answered_504_and_replaced(start_service, record_property) -> None:
    service = start_service(env={"POOL_WORKERS": "2", "COMPUTE_TIMEOUT_S": str(COMPUTE_TIMEOUT_S)})
    old_workers = pool_workers(service.pid)
    assert len(old_workers) == 2
    ticks = {pid: cpu_seconds(pid) for pid in old_workers}
    outcome: dict[str, object] = {}

    def send_heavy() -> None:
        started = time.monotonic()
        outcome["response"] = httpx.post(
            f"{service.url}/payload", content=HEAVY_BODY, headers=JSON, timeout=COMPUTE_TIMEOUT_S + 30
        )
        outcome["seconds"] = time.monotonic() - started

    client = threading.Thread(target=send_heavy)
    client.start()
    # The worker that picked the job up starts burning CPU: freeze it mid-analysis.
    wait_until(
        lambda: _busy_worker(old_workers, ticks) is not None, timeout=30, interval=0.005, message="a busy worker"
    )
    hung = _busy_worker(old_workers, ticks)
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    client.join(timeout=COMPUTE_TIMEOUT_S + 40)
    assert not client.is_alive(), "the request hung"

    assert assert_problem(outcome["response"], 504)["type"] == "/problems/compute-timeout"
    record_property("hung_worker_answer_s", round(outcome["seconds"], 2))
    # SIGTERM would not end a stopped process; the pool must have used SIGKILL.
    wait_until(lambda: process_state(hung) is None, timeout=10, message="the hung worker to be reaped")
    # The 504 does not wait for the rebuild.
    wait_until(lambda: _healed(service), timeout=10, message="a healed pool")
    assert pool_workers(service.pid).isdisjoint(old_workers)
    assert scrape_metric(service.url, "analysis_pool_restarts_total") == 1
    assert scrape_metric(service.url, "analysis_jobs_total", outcome="timeout") == 1
    assert scrape_metric(service.url, "analysis_pool_workers") == 2
    for body in (numbers_body(100_000), numbers_body(5)):
        assert httpx.post(f"{service.url}/payload", content=body, headers=JSON, timeout=60).status_code == 200
    assert scrape_metric(service.url, "analysis_pool_busy_workers") == 0
    assert scrape_metric(service.url, "analysis_pool_queue_depth") == 0


def _healed(service) -> bool:
    return len(pool_workers(service.pid)) == 2 and httpx.get(f"{service.url}/ready").status_code == 200


@pytest.mark.slow
def test_workers_killed_under_load_cost_no_request(start_service, record_property) -> None:
    service = start_service(env=POOL_FOR_EVERY_LARGE_BODY)
    body = numbers_body(40_000)  # ~760 KB: past the inline threshold, so it runs in the pool
    clients, kills, most_requests_per_client = 4, 8, 500
    statuses: list[int] = []
    problems: list[str] = []
    lock = threading.Lock()
    killing_done = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=service.url, timeout=30) as http:
            for _ in range(most_requests_per_client):
                if killing_done.is_set():
                    return
                response = http.post("/payload", content=body, headers=JSON)
                with lock:
                    statuses.append(response.status_code)
                    if response.status_code != 200:
                        problems.append(response.headers.get("x-problem-type", "?"))

    def killer() -> int:
        killed = 0
        generator = random.Random(1)
        try:
            while killed < kills:
                # Let the healed pool serve for a moment, then kill one of its workers.
                wait_until(lambda: _healed(service), timeout=30, message="a healed pool")
                time.sleep(generator.uniform(0.2, 0.6))
                os.kill(generator.choice(sorted(pool_workers(service.pid))), signal.SIGKILL)
                killed += 1
        finally:
            time.sleep(0.5)  # let the last kill meet some requests
            killing_done.set()
        return killed

    with ThreadPoolExecutor(clients + 1) as executor:
        killing = executor.submit(killer)
        loads = [executor.submit(client) for _ in range(clients)]
        for load in loads:
            load.result(timeout=120)  # a hung request fails here
        killed = killing.result(timeout=10)

    failures = len(statuses) - statuses.count(200)
    record_property("chaos_kills", killed)
    record_property("chaos_requests", len(statuses))
    record_property("chaos_failures", failures)
    assert killed == kills
    assert len(statuses) >= 4 * kills, "too few requests met the kills"
    # The pool retries a job once on a rebuilt pool: a request fails only when a kill hits its
    # retry too, so failures are rare and never more than the kills.
    assert failures <= killed
    assert set(problems) <= {"pool-unavailable"}
    wait_until(lambda: len(pool_workers(service.pid)) == 2, timeout=10, message="a full pool")
    assert httpx.get(f"{service.url}/ready").status_code == 200
    assert 1 <= scrape_metric(service.url, "analysis_pool_restarts_total") <= killed
    assert scrape_metric(service.url, "analysis_pool_workers") == 2
    assert scrape_metric(service.url, "analysis_pool_busy_workers") == 0
    assert scrape_metric(service.url, "analysis_pool_queue_depth") == 0
    assert scrape_metric(service.url, "http_requests_in_flight") == 1  # the scrape itself
    assert httpx.post(f"{service.url}/payload", content=body, headers=JSON, timeout=30).status_code == 200


def test_an_idle_worker_that_dies_is_replaced_before_any_job_meets_it(start_service) -> None:
    service = start_service(env=POOL_FOR_EVERY_LARGE_BODY)
    first = pool_workers(service.pid)
    os.kill(min(first), signal.SIGKILL)
    # Only probes and scrapes reach the service until the pool has been rebuilt.
    wait_until(
        lambda: scrape_metric(service.url, "analysis_pool_restarts_total") == 1, timeout=15, message="a rebuilt pool"
    )
    wait_until(lambda: not pool_workers(service.pid) & first, timeout=15, message="the old survivor ended")
    wait_until(lambda: _healed(service), timeout=15, message="a healed pool")
    response = httpx.post(f"{service.url}/payload", content=numbers_body(40_000), headers=JSON, timeout=30)
    assert response.status_code == 200
    assert scrape_metric(service.url, "analysis_pool_restarts_total") == 1
    assert scrape_metric(service.url, "analysis_jobs_total", mode="process", outcome="ok") == 1


def test_a_worker_killed_during_the_rebuild_does_not_stop_the_healing(start_service) -> None:
    service = start_service(env=POOL_FOR_EVERY_LARGE_BODY)
    first = pool_workers(service.pid)
    os.kill(min(first), signal.SIGKILL)
    outcome: dict[str, httpx.Response] = {}
    client = threading.Thread(
        target=lambda: outcome.update(
            response=httpx.post(f"{service.url}/payload", content=numbers_body(40_000), headers=JSON, timeout=60)
        )
    )
    client.start()  # meets the broken pool, starts the rebuild
    wait_until(lambda: pool_workers(service.pid) - first, timeout=30, interval=0.001, message="a new worker")
    os.kill(min(pool_workers(service.pid) - first), signal.SIGKILL)  # kill it while it warms up
    client.join(timeout=60)
    assert not client.is_alive(), "the request hung"
    # The job is retried once; if the second pool broke under it too, the answer is a clean 503.
    if outcome["response"].status_code != 200:
        assert assert_problem(outcome["response"], 503)["type"] == "/problems/pool-unavailable"
    # No further traffic is needed for the pool to heal and the service to turn ready.
    wait_until(lambda: _healed(service), timeout=15, message="a healed pool")
    assert scrape_metric(service.url, "analysis_pool_restarts_total") >= 1
    assert (
        httpx.post(f"{service.url}/payload", content=numbers_body(40_000), headers=JSON, timeout=30).status_code == 200
    )

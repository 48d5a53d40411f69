"""A real Prometheus scrapes the running service; its queries, and the dashboard's, see the traffic."""

from __future__ import annotations

import bisect
import importlib.util
import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.metrics import LATENCY_BUCKETS
from tests.conftest import SEED_PAYLOAD, ServiceProcess, free_port, require_tool, wait_until

pytestmark = pytest.mark.slow

JOB = "sre-microservice"
# Several 1 s scrapes, and longer than the traffic phase plus the wait for the last scrape.
WINDOW = "30s"
MAX_REQUESTS = 3000
TRAFFIC_DEADLINE_S = 15.0
CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@dataclass
class Traffic:
    payload_requests: int
    problem_requests: int
    slowest_s: float


@dataclass
class Scraped:
    prometheus: str
    service: ServiceProcess
    traffic: Traffic


def query(prometheus: str, promql: str) -> dict:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{promql}: {body}"
    return body["data"]


def scalar_result(prometheus: str, promql: str) -> float | None:
    """The value of a single-series instant query, or None while it has no data."""
    result = query(prometheus, promql)["result"]
    if not result:
        return None
    assert len(result) == 1, f"{promql}: {result}"
    return float(result[0]["value"][1])


def drive_traffic(service: ServiceProcess, prometheus: str) -> Traffic:
    """POST until Prometheus has seen the counters rise between two scrapes (bounded); one request
    in each batch is malformed, so the problem counter rises too."""
    rates = [
        f'sum(rate(http_requests_total{{job="{JOB}",route="/payload",status="200"}}[{WINDOW}]))',
        f'sum(rate(http_problems_total{{job="{JOB}"}}[{WINDOW}]))',
    ]
    sent = problems = 0
    slowest = 0.0
    deadline = time.monotonic() + TRAFFIC_DEADLINE_S
    with httpx.Client(base_url=service.url, timeout=10) as client:
        while not all((scalar_result(prometheus, rate) or 0) > 0 for rate in rates):
            assert sent < MAX_REQUESTS and time.monotonic() < deadline, "Prometheus never saw the traffic"
            malformed = client.post("/payload", content=b"{", headers={"content-type": "application/json"})
            assert malformed.status_code == 400
            problems += 1
            for _ in range(25):
                started = time.perf_counter()
                assert client.post("/payload", json=SEED_PAYLOAD).status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
                sent += 1
    return Traffic(payload_requests=sent, problem_requests=problems, slowest_s=slowest)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    prometheus_bin = require_tool("prometheus")
    directory = tmp_path_factory.mktemp("prometheus")
    service = ServiceProcess(env={"POOL_WORKERS": "1"}).start(directory)
    config = directory / "prometheus.yml"
    config.write_text(CONFIG.format(job=JOB, port=service.port))
    web_port = free_port()
    log = (directory / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: _ready(url, prometheus), 30, interval=0.1, message="Prometheus ready")
        assert prometheus.poll() is None, (directory / "prometheus.log").read_text()
        wait_until(
            lambda: scalar_result(url, f'up{{job="{JOB}"}}') == 1, 20, interval=0.2, message="the service scraped"
        )
        traffic = drive_traffic(service, url)
        # A scrape after the traffic stopped has every request, the failed ones included.
        total = f'sum(http_requests_total{{job="{JOB}",route="/payload"}})'
        wait_until(
            lambda: scalar_result(url, total) == traffic.payload_requests + traffic.problem_requests,
            10,
            interval=0.2,
            message="Prometheus to scrape the final count",
        )
        yield Scraped(prometheus=url, service=service, traffic=traffic)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        log.close()
        service.stop()


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        return True
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_request_rate_matches_the_traffic_sent(scraped: Scraped) -> None:
    sent = scraped.traffic.payload_requests
    selector = f'http_requests_total{{job="{JOB}",route="/payload",status="200"}}'
    rate = scalar_result(scraped.prometheus, f"sum(rate({selector}[{WINDOW}]))")
    increase = scalar_result(scraped.prometheus, f"sum(increase({selector}[{WINDOW}]))")
    assert rate is not None and math.isfinite(rate) and rate > 0
    assert increase is not None and math.isfinite(increase)
    # increase() ignores what the first sample already held and extrapolates to the window's edges.
    assert 0 < increase <= 1.5 * sent
    assert scalar_result(scraped.prometheus, f"sum({selector})") == sent


def test_p99_latency_is_finite_and_bounded_by_what_the_client_saw(scraped: Scraped) -> None:
    overall = scalar_result(
        scraped.prometheus,
        f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[{WINDOW}])))",
    )
    assert overall is not None and math.isfinite(overall) and overall > 0
    payload_p99 = scalar_result(
        scraped.prometheus,
        "histogram_quantile(0.99, sum by (le) "
        f'(rate(http_request_duration_seconds_bucket{{route="/payload"}}[{WINDOW}])))',
    )
    assert payload_p99 is not None and math.isfinite(payload_p99) and payload_p99 > 0
    # The server's time is part of the client's; the quantile lies within the bucket holding it.
    bucket = bisect.bisect_left(LATENCY_BUCKETS, scraped.traffic.slowest_s)
    upper = LATENCY_BUCKETS[min(bucket, len(LATENCY_BUCKETS) - 1)]
    assert payload_p99 <= upper


def test_problems_are_counted_by_type(scraped: Scraped) -> None:
    result = query(scraped.prometheus, f'sum by (type) (http_problems_total{{job="{JOB}"}})')["result"]
    by_type = {series["metric"]["type"]: float(series["value"][1]) for series in result}
    assert by_type == {"malformed-json": scraped.traffic.problem_requests}


def load_dashboard_queries():
    """tests/observability/dashboard.py, loaded by path (this directory is not a package)."""
    path = Path(__file__).with_name("dashboard.py")
    spec = importlib.util.spec_from_file_location("observability_dashboard", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dashboard_queries


def test_every_dashboard_query_runs_and_the_service_panels_have_data(scraped: Scraped) -> None:
    queries = load_dashboard_queries()(job=JOB, rate_interval=WINDOW)
    assert queries
    empty_service_panels = []
    for promql in queries:
        data = query(scraped.prometheus, promql)  # asserts status "success"
        # Series that exist in a one-instance test must have data; e.g. kube_* ones need not.
        if any(name in promql for name in ("http_", "analysis_jobs", "analysis_duration", "service_ready", "up{")):
            if not data["result"]:
                empty_service_panels.append(promql)
    assert empty_service_panels == []

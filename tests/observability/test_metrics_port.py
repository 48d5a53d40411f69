"""METRICS_PORT: /metrics moves to a port of its own and the main port answers 404 for it."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, SEED_PAYLOAD, free_port


def test_metrics_are_served_only_on_the_metrics_port(start_service) -> None:
    metrics_port = free_port()
    service = start_service(env={"POOL_WORKERS": "1", "METRICS_PORT": str(metrics_port)})
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    assert httpx.post(f"{service.url}/payload", json=SEED_PAYLOAD, timeout=10).status_code == 200

    hidden = httpx.get(f"{service.url}/metrics", timeout=10)
    assert hidden.status_code == 404
    assert hidden.headers["content-type"] == "application/problem+json"

    exposed = httpx.get(metrics_url, timeout=10)
    assert exposed.status_code == 200
    assert exposed.headers["content-type"].startswith("text/plain; version=")
    counted = {
        (sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(exposed.text)
        if family.name == "http_requests"
        for sample in family.samples
    }
    # The app's own registry: the request on the main port, and the refused /metrics request.
    assert counted[("/payload", "200")] == 1
    assert counted[("/metrics", "404")] == 1
    assert "process_resident_memory_bytes" in exposed.text
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/", timeout=10).status_code == 404


def test_a_taken_metrics_port_stops_start_up(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "service"],
            cwd=ROOT,
            env={"HOST": "127.0.0.1", "PORT": str(free_port()), "POOL_WORKERS": "1", "METRICS_PORT": str(port)},
            capture_output=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert b"Address already in use" in result.stderr + result.stdout


def test_metrics_port_equal_to_the_main_port_is_a_configuration_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", "8123", "--metrics-port", "8123"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"METRICS_PORT=8123 must differ from PORT" in result.stderr

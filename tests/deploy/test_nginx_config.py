"""The edge config (deploy/nginx): it renders, nginx accepts it, and it behaves as documented."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SEED_ANALYSIS, SEED_PAYLOAD, ServiceProcess, require_tool, wait_until
from tests.deploy.nginx_harness import Nginx, render

MAX_BODY_BYTES = 33_554_432


def _without_timing(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "processing_time_ms"}


def test_renderer_cli_output_passes_nginx_syntax_check(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    config = tmp_path / "nginx.conf"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "nginx" / "render.py"),
            "--listen=127.0.0.1:8080",
            "--upstream=127.0.0.1:8001",
            "--upstream=127.0.0.1:8002",
            f"--runtime-dir={tmp_path}",
            f"--output={config}",
        ],
        check=True,
    )
    text = config.read_text()
    assert not render.PLACEHOLDER.search(text)
    assert "server 127.0.0.1:8002 max_fails=3 fail_timeout=10s;" in text
    checked = subprocess.run(
        [nginx, "-t", "-c", str(config), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


def test_renderer_refuses_a_placeholder_without_value() -> None:
    with pytest.raises(KeyError, match="NGINX_LISTEN"):
        render.render({"NGINX_UPSTREAM_SERVERS": "server 127.0.0.1:1;"})
    with pytest.raises(ValueError):
        render.upstream_servers([])


def test_config_keeps_the_documented_retry_and_size_policy(tmp_path: Path) -> None:
    # The settings the zero-downtime test and the service contract rely on.
    config = render.render_config(listen="8080", upstreams=["app1:8000"], runtime_dir=tmp_path)
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in config
    assert "client_max_body_size 32m;" in config and 32 * 1024 * 1024 == MAX_BODY_BYTES
    # Below uvicorn's keep-alive timeout (service/cli.py: timeout_keep_alive=5).
    assert re.search(r"upstream sre_microservice \{[^}]*keepalive_timeout 4s;", config)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = ServiceProcess(env={"POOL_WORKERS": "1", "ACCESS_LOG": "on"})
    service.start(tmp_path_factory.mktemp("replica"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def edge(replica: ServiceProcess) -> Iterator[Nginx]:
    nginx = Nginx(require_tool("nginx"), [f"127.0.0.1:{replica.port}"], worker_processes=1).start()
    yield nginx
    nginx.stop()


def test_payload_through_the_edge_gets_the_analysis_and_a_request_id(edge: Nginx) -> None:
    response = httpx.post(f"{edge.url}/payload", json=SEED_PAYLOAD)
    assert response.status_code == 200, response.text
    assert _without_timing(response.json()) == SEED_ANALYSIS
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert len(response.headers.get_list("x-request-id")) == 1


def test_a_sane_client_request_id_reaches_the_service_and_the_logs(edge: Nginx, replica: ServiceProcess) -> None:
    request_id = "edge-test-7f3a.1"
    response = httpx.post(f"{edge.url}/payload", json=SEED_PAYLOAD, headers={"x-request-id": request_id})
    assert response.headers.get_list("x-request-id") == [request_id]
    wait_until(lambda: request_id in replica.log(), 5, message="the request ID in the service log")
    wait_until(
        lambda: any(entry["request_id"] == request_id for entry in edge.access_entries()),
        5,
        message="the request ID in the access log",
    )


def test_an_unsafe_client_request_id_is_replaced(edge: Nginx) -> None:
    response = httpx.get(f"{edge.url}/health", headers={"x-request-id": 'bad id "quoted"'})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


@pytest.mark.parametrize("path", ["/metrics", "/metrics?format=text", "//metrics", "/%6Detrics"])
def test_metrics_are_not_exposed_at_the_edge(edge: Nginx, replica: ServiceProcess, path: str) -> None:
    assert "http_requests_total" in httpx.get(f"{replica.url}/metrics").text
    response = httpx.get(f"{edge.url}{path}")
    assert response.status_code == 404
    assert "http_requests_total" not in response.text


def test_exact_metrics_path_answers_a_problem_document(edge: Nginx) -> None:
    response = httpx.get(f"{edge.url}/metrics")
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/not-found"


def test_a_body_over_the_service_limit_is_refused_at_the_edge(edge: Nginx) -> None:
    # Only the headers: nginx answers from the announced length, before reading any body.
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as connection:
        connection.sendall(
            b"POST /payload HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
        )
        response = connection.recv(65536).decode()
    head, _, body = response.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 413")
    assert "content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"] == "/problems/payload-too-large"


def test_access_log_is_one_json_object_per_request(edge: Nginx, replica: ServiceProcess) -> None:
    httpx.get(f"{edge.url}/ready")
    wait_until(lambda: any(entry["uri"] == "/ready" for entry in edge.access_entries()), 5, message="a log line")
    entry = next(entry for entry in edge.access_entries() if entry["uri"] == "/ready")
    assert entry["status"] == 200
    assert entry["method"] == "GET"
    assert entry["upstream_addr"] == f"127.0.0.1:{replica.port}"
    assert isinstance(entry["request_time"], float)


class ConnectionDropper:
    """A broken replica: reads each request, then resets the connection without answering."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                connection.recv(65536)
                # Linger 0: close with RST, as a crashed process's kernel does.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.dropped += 1

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()


def test_a_post_that_a_replica_drops_is_retried_on_another(replica: ServiceProcess) -> None:
    # Without `non_idempotent`, nginx would answer 502 instead of retrying a POST it had sent.
    dropper = ConnectionDropper()
    nginx = Nginx(require_tool("nginx"), [f"127.0.0.1:{dropper.port}", f"127.0.0.1:{replica.port}"], 1).start()
    try:
        with httpx.Client(base_url=nginx.url) as client:
            responses = [client.post("/payload", json=SEED_PAYLOAD) for _ in range(6)]
    finally:
        entries = nginx.stop().access_entries
        dropper.close()
    assert [response.status_code for response in responses] == [200] * 6
    assert all(_without_timing(response.json()) == SEED_ANALYSIS for response in responses)
    assert dropper.dropped >= 1
    dropped_then_served = f"127.0.0.1:{dropper.port}, 127.0.0.1:{replica.port}"
    retried = [entry for entry in entries if entry["upstream_addr"] == dropped_then_served]
    assert len(retried) == dropper.dropped

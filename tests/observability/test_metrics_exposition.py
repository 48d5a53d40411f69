"""/metrics after mixed traffic: promtool accepts it, and every documented metric is there and right."""

from __future__ import annotations

import platform
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SEED_PAYLOAD, require_tool

# Family name (as the parser reports it: counters without _total) -> type.
DOCUMENTED_FAMILIES = {
    "http_requests": "counter",
    "http_request_duration_seconds": "histogram",
    "http_requests_in_flight": "gauge",
    "http_request_size_bytes": "histogram",
    "http_response_size_bytes": "histogram",
    "http_problems": "counter",
    "analysis_jobs": "counter",
    "analysis_duration_seconds": "histogram",
    "analysis_pending_jobs": "gauge",
    "analysis_pool_queue_depth": "gauge",
    "analysis_pool_busy_workers": "gauge",
    "analysis_pool_workers": "gauge",
    "analysis_pool_restarts": "counter",
    "analysis_requests_shed": "counter",
    "analysis_payload_numbers": "histogram",
    "analysis_payload_text_chars": "histogram",
    "service_ready": "gauge",
    "build_info": "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}
LATENCY_BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


def mixed_traffic(client: httpx.Client) -> dict[str, int]:
    """Successes and every kind of client error; the expected problem counts by type."""
    assert client.post("/payload", json=SEED_PAYLOAD).status_code == 200
    assert client.post("/payload", json={"numbers": [1.5] * 100, "text": "x " * 500}).status_code == 200
    malformed = client.post("/payload", content=b'{"numbers": [1,', headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert client.post("/payload", json={"numbers": "nope", "text": ""}).status_code == 422
    assert client.post("/payload", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    assert client.get("/payload").status_code == 405
    assert client.get("/no/such/thing").status_code == 404
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    return {
        "malformed-json": 1,
        "validation-error": 1,
        "unsupported-media-type": 1,
        "method-not-allowed": 1,
        "not-found": 1,
    }


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def client(shared_service) -> httpx.Client:
    with httpx.Client(base_url=shared_service.url, timeout=10) as client:
        yield client


def test_promtool_accepts_the_exposition_after_mixed_traffic(client: httpx.Client) -> None:
    promtool = require_tool("promtool")
    mixed_traffic(client)
    exposition = client.get("/metrics")
    assert exposition.headers["content-type"].startswith("text/plain; version=")
    check = subprocess.run([promtool, "check", "metrics"], input=exposition.content, capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert check.stdout.decode().strip() == "" and check.stderr.decode().strip() == ""


def test_every_documented_family_is_exposed_with_its_type(client: httpx.Client) -> None:
    mixed_traffic(client)
    types = {family.name: family.type for family in text_string_to_metric_families(client.get("/metrics").text)}
    missing_or_wrong = {name: types.get(name) for name, kind in DOCUMENTED_FAMILIES.items() if types.get(name) != kind}
    assert missing_or_wrong == {}


def test_traffic_is_counted_by_route_template_status_and_problem_type(client: httpx.Client) -> None:
    before = samples(client.get("/metrics").text)
    expected_problems = mixed_traffic(client)
    after = samples(client.get("/metrics").text)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("http_requests_total", method="POST", route="/payload", status="200") == 2
    assert grew("http_requests_total", method="POST", route="/payload", status="400") == 1
    assert grew("http_requests_total", method="POST", route="/payload", status="422") == 1
    assert grew("http_requests_total", method="POST", route="/payload", status="415") == 1
    assert grew("http_requests_total", method="GET", route="/payload", status="405") == 1
    assert grew("http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    for problem_type, count in expected_problems.items():
        status = {
            "malformed-json": "400",
            "validation-error": "422",
            "unsupported-media-type": "415",
            "method-not-allowed": "405",
            "not-found": "404",
        }[problem_type]
        assert grew("http_problems_total", status=status, type=problem_type) == count, problem_type
    # Five POSTs to /payload, each timed and sized once.
    assert grew("http_request_duration_seconds_count", method="POST", route="/payload") == 5
    assert grew("http_request_size_bytes_count", method="POST", route="/payload") == 5
    assert grew("analysis_jobs_total", mode="inline", outcome="ok") == 2
    assert grew("analysis_jobs_total", mode="inline", outcome="invalid") == 2
    assert grew("analysis_payload_numbers_count") == 2
    assert grew("analysis_payload_numbers_sum") == 105
    assert grew("analysis_payload_text_chars_sum") == len(SEED_PAYLOAD["text"]) + 1000
    # The middleware saw the whole 100-number body.
    assert grew("http_request_size_bytes_sum", method="POST", route="/payload") > 100 * len("1.5, ")
    assert value(after, "http_requests_in_flight") == 1  # the scrape itself
    assert value(after, "service_ready") == 1
    assert value(after, "analysis_pool_workers") == 2


def test_a_head_request_counts_no_response_body(client: httpx.Client) -> None:
    # The route produces GET's body; the HTTP server sends only the head.
    before = samples(client.get("/metrics").text)
    response = client.head("/ready")
    after = samples(client.get("/metrics").text)
    assert response.status_code == 200 and response.content == b""
    for name, grown in (("http_response_size_bytes_count", 1), ("http_response_size_bytes_sum", 0)):
        assert (
            value(after, name, method="HEAD", route="/ready") - value(before, name, method="HEAD", route="/ready")
            == grown
        )


def test_latency_histogram_has_the_documented_buckets(client: httpx.Client) -> None:
    client.get("/health")
    bounds = sorted(
        float(sample.labels["le"])
        for family in text_string_to_metric_families(client.get("/metrics").text)
        if family.name == "http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["route"] == "/health"
    )
    assert bounds == [*LATENCY_BOUNDS, float("inf")]


def test_build_info_carries_version_revision_and_python(start_service) -> None:
    service = start_service(env={"POOL_WORKERS": "1", "REVISION": "0123abc"})
    parsed = samples(httpx.get(f"{service.url}/metrics", timeout=10).text)
    labels = {"version": "1.0.0", "revision": "0123abc", "python": platform.python_version()}
    assert value(parsed, "build_info", **labels) == 1

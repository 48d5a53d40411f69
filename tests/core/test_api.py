"""The HTTP contract, against a real service process."""

from __future__ import annotations

import json

import httpx
import pytest

from service.config import Settings
from tests.conftest import SEED_ANALYSIS, SEED_PAYLOAD, ServiceProcess, metric_value

pytestmark = pytest.mark.usefixtures("shared_service")


@pytest.fixture
def client(shared_service: ServiceProcess):
    with httpx.Client(base_url=shared_service.url, timeout=30) as client:
        yield client


def test_seed_example(client: httpx.Client) -> None:
    response = client.post("/payload", json=SEED_PAYLOAD)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    processing_time = body.pop("processing_time_ms")
    assert isinstance(processing_time, float) and processing_time > 0
    assert body == SEED_ANALYSIS


def test_numeric_fields_are_floats_except_count(client: httpx.Client) -> None:
    numeric = client.post("/payload", json={"numbers": [2], "text": "x"}).json()["numeric_analysis"]
    assert numeric == {
        "minimum": 2.0,
        "maximum": 2.0,
        "mean": 2.0,
        "median": 2.0,
        "standard_deviation": 0.0,
        "count": 1,
    }
    assert all(isinstance(numeric[key], float) for key in numeric if key != "count")


def test_a_standard_deviation_beyond_the_float_range_is_null_as_the_schema_says(client: httpx.Client) -> None:
    numeric = client.post("/payload", json={"numbers": [1.7e308, -1.7e308], "text": "x"}).json()["numeric_analysis"]
    assert numeric["standard_deviation"] is None
    assert all(isinstance(numeric[key], float) for key in ("minimum", "maximum", "mean", "median"))
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"type": "null"} in schemas["NumericAnalysis"]["properties"]["standard_deviation"]["anyOf"]


def test_a_payload_past_the_lone_threshold_goes_through_the_pool(client: httpx.Client) -> None:
    numbers = list(range(400_000))
    body = json.dumps({"numbers": numbers, "text": "Big. Data! " * 20_000})
    assert len(body) > Settings().inline_alone_threshold_bytes
    before = metric_value(client.get("/metrics").text, "analysis_jobs_total", mode="process", outcome="ok")
    response = client.post("/payload", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    analysis = response.json()
    assert analysis["numeric_analysis"]["count"] == 400_000
    assert analysis["numeric_analysis"]["median"] == 199_999.5
    assert analysis["text_analysis"]["sentence_count"] == 40_000
    after = metric_value(client.get("/metrics").text, "analysis_jobs_total", mode="process", outcome="ok")
    assert after == before + 1


def test_a_large_payload_alone_is_analysed_inline(client: httpx.Client) -> None:
    body = json.dumps({"numbers": list(range(100_000)), "text": "Big. Data! " * 20_000})
    settings = Settings(pool_workers=2).resolved()  # as shared_service runs
    assert settings.inline_threshold_bytes < len(body) <= settings.inline_alone_threshold_bytes
    before = client.get("/metrics").text
    response = client.post("/payload", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["numeric_analysis"]["median"] == 49_999.5
    after = client.get("/metrics").text
    for mode, more in (("inline", 1), ("process", 0)):
        jobs = [metric_value(text, "analysis_jobs_total", mode=mode, outcome="ok") for text in (before, after)]
        assert jobs[1] == jobs[0] + more, mode


@pytest.mark.parametrize(("numbers", "mode"), [(30_000, "inline"), (60_000, "process")])
def test_the_default_inline_threshold_is_512_kib(start_service, numbers: int, mode: str) -> None:
    # Where bench.pools puts the cut-over for one worker and for two (docs/performance.md). The
    # lone-body rule is off, so only INLINE_THRESHOLD_BYTES decides.
    service = start_service(env={"POOL_WORKERS": "2", "INLINE_ALONE_THRESHOLD_BYTES": "0"})
    body = json.dumps({"numbers": list(range(numbers)), "text": "Word. " * (numbers * 2 // 3)})
    assert (len(body) <= 512 * 1024) == (mode == "inline")
    with httpx.Client(base_url=service.url, timeout=30) as client:
        response = client.post("/payload", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200
        assert response.json()["numeric_analysis"]["count"] == numbers
        metrics = client.get("/metrics").text
    assert metric_value(metrics, "analysis_jobs_total", mode=mode, outcome="ok") == 1
    assert f'"inline_threshold_bytes": {512 * 1024}' in service.log()


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}


def test_metrics_use_route_templates(client: httpx.Client) -> None:
    client.post("/payload", json=SEED_PAYLOAD)
    client.get("/no/such/path/12345")
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/payload",status="200"}' in text
    assert 'route="<unmatched>"' in text
    assert "/no/such/path" not in text
    for family in ("http_request_duration_seconds_bucket", "http_requests_in_flight", "analysis_pool_workers 2.0"):
        assert family in text


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    assert client.get("/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/health").headers["x-request-id"]
    assert len(generated) == 32
    # An unacceptable ID (too long) is replaced, not echoed into logs.
    assert client.get("/health", headers={"x-request-id": "x" * 500}).headers["x-request-id"] != "x" * 500


def test_openapi_is_built_from_the_types(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    payload = schemas["Payload"]
    assert payload["required"] == ["numbers", "text"]
    assert payload["additionalProperties"] is False
    assert payload["properties"]["numbers"]["maxItems"] == 1_000_000
    assert payload["properties"]["text"]["maxLength"] == 5_000_000
    assert set(schemas["NumericAnalysis"]["properties"]) == {
        "minimum",
        "maximum",
        "mean",
        "median",
        "standard_deviation",
        "count",
    }
    responses = document["paths"]["/payload"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)


def test_logs_are_json_lines_without_per_request_lines(shared_service: ServiceProcess, client: httpx.Client) -> None:
    for _ in range(5):
        client.post("/payload", json=SEED_PAYLOAD)
    lines = [line for line in shared_service.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any(record["logger"] == "uvicorn.error" for record in records)
    assert not any(record["logger"] == "uvicorn.access" for record in records)


def test_a_validation_error_found_in_a_pool_worker_is_still_422(client: httpx.Client) -> None:
    numbers: list[object] = list(range(400_000))  # past the lone threshold: analysed in the pool
    numbers[200_000] = True
    response = client.post("/payload", json={"numbers": numbers, "text": "big enough for the pool"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [{"path": "$.numbers[200000]", "message": "Expected `float`, got `bool`"}]
    assert 'analysis_jobs_total{mode="process",outcome="invalid"}' in client.get("/metrics").text

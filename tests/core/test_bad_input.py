"""Every class of bad input gets a clear RFC 9457 problem, never a 500."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from tests.conftest import ServiceProcess, read_response, scrape_metric

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def small_limits(tmp_path_factory: pytest.TempPathFactory):
    env = {"POOL_WORKERS": "1", "MAX_NUMBERS": "100", "MAX_TEXT_CHARS": "1000", "MAX_BODY_BYTES": "100000"}
    service = ServiceProcess(env=env).start(tmp_path_factory.mktemp("limits"))
    yield service
    service.stop()


@pytest.fixture
def client(small_limits: ServiceProcess):
    with httpx.Client(base_url=small_limits.url, timeout=30) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == f"/problems/{slug}"
    assert problem["title"] and problem["detail"]
    return problem


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"numbers": [1,], "text": "a"}',
        b'{"numbers": [NaN], "text": "a"}',
        b'{"numbers": [Infinity], "text": "a"}',
        b"",
        b'{"numbers": [1], "text": "a"} trailing',
        b'{"numbers": [1], "text": "\xff"}',
    ],
    ids=["truncated", "trailing-comma", "nan", "infinity", "empty", "trailing-data", "invalid-utf8"],
)
def test_malformed_json_is_400(client: httpx.Client, body: bytes) -> None:
    assert_problem(client.post("/payload", content=body, headers=JSON), 400, "malformed-json")


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"text": "a"}, "$"),
        ({"numbers": [1]}, "$"),
        ({"numbers": [1], "text": "a", "extra": 1}, "$"),
        ({"numbers": [1, 2, 3, "4"], "text": "a"}, "$.numbers[3]"),
        ({"numbers": [1, True], "text": "a"}, "$.numbers[1]"),
        ({"numbers": [1, None], "text": "a"}, "$.numbers[1]"),
        ({"numbers": "1,2", "text": "a"}, "$.numbers"),
        ({"numbers": [1], "text": 5}, "$.text"),
        ([1, 2, 3], "$"),
        ("just a string", "$"),
        ({"numbers": [], "text": "a"}, "$.numbers"),
        ({"numbers": [1], "text": ""}, "$.text"),
        ({"numbers": list(range(101)), "text": "a"}, "$.numbers"),
        ({"numbers": [1], "text": "a" * 1001}, "$.text"),
    ],
    ids=[
        "missing-numbers",
        "missing-text",
        "unknown-field",
        "string-number",
        "boolean-number",
        "null-number",
        "numbers-not-array",
        "text-not-string",
        "array-body",
        "string-body",
        "empty-numbers",
        "empty-text",
        "too-many-numbers",
        "text-too-long",
    ],
)
def test_schema_violations_are_422_with_a_path(client: httpx.Client, payload: object, path: str) -> None:
    problem = assert_problem(client.post("/payload", json=payload), 422, "validation-error")
    assert problem["errors"][0]["path"] == path
    assert problem["errors"][0]["message"]


@pytest.mark.parametrize("number", [b"1e999", b"-1e400", b"9" * 400], ids=["1e999", "-1e400", "400-digit-integer"])
def test_numbers_out_of_float_range_are_422(client: httpx.Client, number: bytes) -> None:
    body = b'{"numbers": [1, ' + number + b'], "text": "a"}'
    problem = assert_problem(client.post("/payload", content=body, headers=JSON), 422, "validation-error")
    assert problem["errors"][0]["path"] == "$.numbers[1]"


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON", "application/json; charset=utf-8", "application/json;charset=UTF-8"],
)
def test_json_content_types_are_accepted(client: httpx.Client, content_type: str) -> None:
    body = json.dumps({"numbers": [1], "text": "a"})
    assert client.post("/payload", content=body, headers={"content-type": content_type}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {},
        {"content-type": "application/json; charset=latin-1"},
        {"content-type": "application/json", "content-encoding": "gzip"},
    ],
    ids=["text-plain", "form", "missing", "latin-1", "gzip"],
)
def test_other_content_types_are_415(client: httpx.Client, headers: dict[str, str]) -> None:
    body = json.dumps({"numbers": [1], "text": "a"}).encode()
    assert_problem(client.post("/payload", content=body, headers=headers), 415, "unsupported-media-type")


def test_oversized_content_length_is_refused_before_the_body_is_read(small_limits: ServiceProcess) -> None:
    # Announce 10 MB, send nothing: the answer must come from the headers alone.
    with socket.create_connection(("127.0.0.1", small_limits.port), timeout=10) as sock:
        sock.sendall(
            b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        response = read_response(sock).decode()
    assert response.startswith("HTTP/1.1 413 ")
    assert "application/problem+json" in response


def test_oversized_chunked_body_is_refused_once_past_the_limit(client: httpx.Client) -> None:
    def chunks():
        for _ in range(1000):  # 1 MB in all, ten times the limit
            yield b" " * 1000

    response = client.post("/payload", content=chunks(), headers=JSON)
    assert_problem(response, 413, "payload-too-large")


@pytest.mark.parametrize(
    "headers",
    [
        [("content-type", "application/json"), ("content-type", "text/plain")],
        [("content-type", "application/json"), ("content-encoding", "identity"), ("content-encoding", "gzip")],
        [("content-type", "application/json"), ("content-encoding", "identity, gzip")],
    ],
    ids=["second-content-type", "second-content-encoding-line", "encoding-list"],
)
def test_every_line_of_a_repeated_header_counts(client: httpx.Client, headers: list[tuple[str, str]]) -> None:
    body = json.dumps({"numbers": [1], "text": "a"}).encode()
    assert_problem(client.post("/payload", content=body, headers=headers), 415, "unsupported-media-type")


def _raw_post(port: int, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" + head + body)
        head, _, answer = read_response(sock).partition(b"\r\n\r\n")
    return head, answer


@pytest.mark.parametrize(
    "transfer_encoding",
    [b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"],
    ids=["one-line", "two-lines"],
)
def test_a_transfer_coding_besides_chunked_is_501(small_limits: ServiceProcess, transfer_encoding: bytes) -> None:
    body = b'{"numbers":[1,2,3],"text":"a b"}'
    head, answer = _raw_post(
        small_limits.port, transfer_encoding + b"\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    assert head.startswith(b"HTTP/1.1 501 ")
    assert json.loads(answer)["type"] == "/problems/unsupported-transfer-coding"


def test_chunked_alone_is_accepted(small_limits: ServiceProcess) -> None:
    body = b'{"numbers":[1,2,3],"text":"a b"}'
    head, answer = _raw_post(
        small_limits.port, b"Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer)["numeric_analysis"]["count"] == 3


def test_unknown_path_and_method_are_problems(client: httpx.Client) -> None:
    assert_problem(client.get("/nope"), 404, "not-found")
    # Paths are exact: no redirect, whose Location would come from the client's Host header.
    assert_problem(client.post("/payload/", json={"numbers": [1], "text": "a"}), 404, "not-found")
    assert_problem(client.get("/health/"), 404, "not-found")
    problem = assert_problem(client.get("/payload"), 405, "method-not-allowed")
    assert "GET" in problem["detail"]
    assert client.get("/payload").headers["allow"] == "POST"


def test_problems_are_counted_by_type(client: httpx.Client) -> None:
    client.post("/payload", content=b"{", headers=JSON)
    metrics = client.get("/metrics").text
    assert 'http_problems_total{status="400",type="malformed-json"}' in metrics


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n",
        b"POST /payload HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["not-http", "bad-content-length", "length-and-chunked"],
)
def test_invalid_http_is_a_counted_400_problem(small_limits: ServiceProcess, request_bytes: bytes) -> None:
    def refused() -> float:
        return scrape_metric(small_limits.url, "http_requests_total", method="OTHER", route="<unmatched>", status="400")

    before = refused()
    with socket.create_connection(("127.0.0.1", small_limits.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        head, _, body = read_response(sock).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/problem+json" in head
    assert re.search(rb"\r\nx-request-id: [0-9a-f]{32}\r\n", head), head
    problem = json.loads(body)
    assert problem["type"] == "/problems/malformed-request" and problem["status"] == 400
    assert refused() == before + 1
    assert scrape_metric(small_limits.url, "http_problems_total", status="400", type="malformed-request") >= 1


def test_invalid_http_answers_with_the_request_id_read_before_the_fault(small_limits: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", small_limits.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Request-ID: probe-7.a\r\nContent-Length: abc\r\n\r\n")
        head = read_response(sock).partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nx-request-id: probe-7.a\r\n" in head

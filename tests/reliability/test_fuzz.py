"""Fuzzing: schemathesis against the served OpenAPI document, and hypothesis-made hostile bodies.

Every answer is a 2xx or a 4xx in the problem format: no 5xx, no dropped connection, and the
service stays up.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.slow
def test_schemathesis_finds_no_problem(shared_service, tmp_path: Path, record_property) -> None:
    junit = tmp_path / "schemathesis.xml"
    result = subprocess.run(
        [
            str(SCHEMATHESIS), "run", f"{shared_service.url}/openapi.json",
            "--checks", "all",
            "--mode", "all",  # valid and schema-violating requests
            "--max-examples", "150",
            "--seed", "20240601",
            "--request-timeout", "30",
            "--report", "junit", "--report-junit-path", str(junit),
            "--no-color",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated is not None, result.stdout[-3000:]
    assert int(generated[1]) >= 150 and generated[1] == generated[2]
    record_property("schemathesis_cases", int(generated[1]))
    assert httpx.get(f"{shared_service.url}/health").status_code == 200


VALID = {"numbers": [1, 2.5, -3e10], "text": "Sample text. Two!"}
VALID_JSON = json.dumps(VALID)

# Pieces of JSON text that parsers get wrong.
HOSTILE_NUMBERS = st.sampled_from(
    ["1e999999", "-1e400", "1e-400", "9" * 5000, "-" + "9" * 400, "1.7976931348623157e309", "NaN", "Infinity",
     "-Infinity", "0x10", "01", "1.", ".5", "+1", "1e", "--1", "1_000", "\u0661", "true", "null", '"1"', "[]", "{}"]
)  # fmt: skip
HOSTILE_STRINGS = st.sampled_from(
    ['"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', '"a\x00b"', '"\x01\x1f"', '"\\x41"', '"\\uZZZZ"', '"\\', '"',
     '"\t\n"', '"\\/\\b\\f\\n\\r\\t"', '"\u2028\u2029"', '"\U0001f600"', "'single'", '""', '"' + "x" * 70_000 + '"']
)  # fmt: skip


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["binary", "truncated", "nested", "numbers", "strings", "mutated", "keys"]))
    if kind == "binary":
        return draw(st.binary(max_size=2000))
    if kind == "truncated":
        document = json.dumps(
            {"numbers": draw(st.lists(st.floats(allow_nan=False), min_size=1, max_size=50)), "text": "t"}
        )
        return document[: draw(st.integers(0, len(document) - 1))].encode()
    if kind == "nested":
        depth = draw(st.sampled_from([1, 2, 64, 1_000, 10_000, 200_000]))
        where = draw(st.sampled_from(["root", "numbers", "text", "element"]))
        nested = _nested(depth)
        return {
            "root": nested,
            "numbers": f'{{"numbers": {nested}, "text": "t"}}',
            "text": f'{{"numbers": [1], "text": {nested}}}',
            "element": f'{{"numbers": [1, {nested}], "text": "t"}}',
        }[where].encode()
    if kind == "numbers":
        elements = draw(st.lists(HOSTILE_NUMBERS, min_size=1, max_size=5))
        return f'{{"numbers": [{", ".join(elements)}], "text": "t"}}'.encode()
    if kind == "strings":
        return f'{{"numbers": [1], "text": {draw(HOSTILE_STRINGS)}}}'.encode("utf-8", "surrogatepass")
    if kind == "keys":
        key = draw(
            st.sampled_from(['"numbers"', '"numb\\u0065rs"', '"text"', '"extra"', '""', '"\\u0000"', "numbers", "1"])
        )
        value = draw(st.sampled_from(["[1]", '"t"', "null", "{}", "[[1]]"]))
        return f'{{"numbers": [1], "text": "t", {key}: {value}}}'.encode()
    # mutated: a valid body with random bytes replaced, inserted or deleted
    body = bytearray(VALID_JSON.encode())
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(body) - 1))
        operation = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.integers(0, 255))
        if operation == "replace":
            body[position] = byte
        elif operation == "insert":
            body.insert(position, byte)
        elif len(body) > 1:
            del body[position]
    return bytes(body)


CONTENT_TYPES = st.sampled_from(
    ["application/json", "APPLICATION/JSON", "application/json; charset=utf-8", 'application/json; charset="UTF-8"',
     "application/json; charset=latin-1", "application/json;;", "application/json; boundary=x", "application/jsonx",
     "application/problem+json", "text/plain", "multipart/form-data; boundary=x", "", "*/*", None]
)  # fmt: skip
CONTENT_ENCODINGS = st.sampled_from([None, "identity", "IDENTITY", "gzip", "br", "deflate", "gzip, identity", "", "x"])


def _check_answer(response: httpx.Response, body: bytes) -> None:
    assert response.status_code < 500, (response.status_code, body[:300], response.text[:300])
    if response.status_code == 200:
        analysis = response.json()
        assert set(analysis) == {"numeric_analysis", "text_analysis", "processing_time_ms"}
    else:
        assert 400 <= response.status_code < 500, response.status_code
        assert response.headers["content-type"] == "application/problem+json", response.headers
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["type"].startswith("/problems/")


@pytest.fixture(scope="module")
def client(shared_service):
    with httpx.Client(base_url=shared_service.url, timeout=30) as http:
        yield http


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=hostile_bodies())
def test_hostile_bodies_get_a_client_error_never_a_server_error(client, body: bytes) -> None:
    response = client.post("/payload", content=body, headers={"content-type": "application/json"})
    _check_answer(response, body)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    content_type=CONTENT_TYPES,
    content_encoding=CONTENT_ENCODINGS,
    body=st.one_of(st.just(VALID_JSON.encode()), hostile_bodies()),
)
def test_odd_content_headers_get_a_clean_answer(client, content_type, content_encoding, body: bytes) -> None:
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if content_encoding is not None:
        headers["content-encoding"] = content_encoding
    response = client.post("/payload", content=body, headers=headers)
    _check_answer(response, body)
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json" or (content_encoding or "identity").lower() != "identity":
        assert response.status_code == 415


def test_service_survived_the_fuzzing(client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200

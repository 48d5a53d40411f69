"""Repeated top-level keys are refused (422), never silently resolved to the last value."""

from __future__ import annotations

import json
import random

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.analysis import analyze_body
from compute.decoding import InvalidPayload, _duplicate_key_by_scanning, duplicate_key
from compute.schema import Limits

WHITESPACE = st.text(alphabet=" \t\r\n", max_size=3)
TRICKY_TEXT = st.sampled_from(
    ['"numbers":[1]', "numbers", "text", "\\", '\\"', '"', "}", "]", ',"text":"x"', "\u00e9\u2028\U0001f600"]
)
TEXT = st.one_of(st.text(min_size=1, max_size=40), TRICKY_TEXT, st.lists(TRICKY_TEXT, min_size=1).map("".join))
NUMBERS = st.lists(
    st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False)), min_size=1, max_size=8
)


@st.composite
def key_spelling(draw: st.DrawFn, name: str) -> str:
    """A JSON string for ``name``, each character raw or as a \\uXXXX escape of either case."""
    spelled = []
    for char in name:
        if draw(st.booleans()):
            escape = f"\\u{ord(char):04x}"
            spelled.append(escape.upper().replace("\\U", "\\u") if draw(st.booleans()) else escape)
        else:
            spelled.append(char)
    return '"' + "".join(spelled) + '"'


@st.composite
def payload_documents(draw: st.DrawFn) -> bytes:
    """A payload object with each key present once or more, in any order and spelling."""
    names = ["numbers", "text"] + draw(st.lists(st.sampled_from(["numbers", "text"]), max_size=3))
    names = draw(st.permutations(names))
    members = []
    for name in names:
        value = draw(NUMBERS) if name == "numbers" else draw(TEXT)
        encoded = json.dumps(value, ensure_ascii=draw(st.booleans()), separators=(",", ":"))
        if name == "text" and draw(st.booleans()):
            encoded = encoded.replace("/", "\\/")
        ws = [draw(WHITESPACE) for _ in range(3)]
        members.append(f"{ws[0]}{draw(key_spelling(name))}{ws[1]}:{ws[2]}{encoded}")
    return ("{" + ",".join(members) + draw(WHITESPACE) + "}").encode()


def first_duplicate(document: bytes) -> str | None:
    """The oracle: Python's own parser, reporting the first repeated key."""
    seen: list[str] = []
    for name, _ in json.loads(document, object_pairs_hook=lambda pairs: pairs):
        if name in seen:
            return name
        seen.append(name)
    return None


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(payload_documents())
def test_scan_agrees_with_a_full_parse(document: bytes) -> None:
    expected = first_duplicate(document)
    assert duplicate_key(document) == expected
    # Small bodies rarely reach the scan through duplicate_key; it must agree on its own too.
    assert _duplicate_key_by_scanning(document) == expected
    if expected is None:
        analyze_body(document, Limits())  # a valid payload is never refused
    else:
        with pytest.raises(InvalidPayload) as refused:
            analyze_body(document, Limits())
        assert refused.value.path == f"$.{expected}"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b'{"numbers":[1],"numbers":[2],"text":"a"}', "numbers"),
        (b'{"numbers":[1],"numb\\u0065rs":[2],"text":"a"}', "numbers"),
        (b'{"text":"a","numbers":[1],"\\u0074ext":"b"}', "text"),
        (b'{"numbers":[1],"text":"\\"numbers\\":[2]"}', None),
        (b'{"numbers":[1],"text":"\\\\"}', None),
        # Not payloads (msgspec refuses them first); the scan hands them to the full parser.
        (b'{"a":{"b":1},"a":2}', "a"),
        (b'{"a":true,"b":null}', None),
    ],
)
def test_known_cases(document: bytes, expected: str | None) -> None:
    assert duplicate_key(document) == expected
    assert _duplicate_key_by_scanning(document) == expected


def test_a_large_body_is_scanned_exactly() -> None:
    text = json.dumps('a "numbers": [1] line\n' * 20_000)
    unique = f'{{"numbers":[{",".join(["1.5"] * 50_000)}],"text":{text}}}'.encode()
    assert duplicate_key(unique) is None
    assert duplicate_key(unique[:-1] + b',"numbers":[2]}') == "numbers"


def test_service_refuses_duplicates_with_a_problem(shared_service) -> None:
    for body, path in [
        (b'{"numbers":[1],"numbers":[2],"text":"a"}', "$.numbers"),
        (b'{"numbers":[1],"numb\\u0065rs":[2],"text":"a"}', "$.numbers"),
        (b'{"text":"a","numbers":[1],"text":"b"}', "$.text"),
    ]:
        response = httpx.post(
            f"{shared_service.url}/payload", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "/problems/validation-error"
        assert problem["errors"][0]["path"] == path


def test_large_duplicate_goes_through_the_pool(shared_service) -> None:
    """A body past the inline threshold is checked in a pool worker the same way."""
    numbers = json.dumps([random.random() for _ in range(50_000)])
    body = f'{{"numbers":{numbers},"text":"a","numbers":[1]}}'.encode()
    response = httpx.post(
        f"{shared_service.url}/payload", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "$.numbers"

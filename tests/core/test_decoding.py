"""Bodies from 4 KiB to 4 MiB take simdjson's path, the others msgspec's: both must accept the same
bodies, yield the same values bit for bit, and refuse the rest with the same error (msgspec words
it)."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._common import make_body
from compute.decoding import (
    BULK_DECODE_FROM,
    InvalidPayload,
    MalformedPayload,
    _decode_exactly,
    _decode_in_bulk,
    _with_short_exponents,
    decode_payload,
    decoder_for,
    duplicate_key,
)
from compute.memory import HUGE_BODY_BYTES
from compute.schema import Limits
from tests.reliability.test_duplicate_keys import payload_documents
from tests.reliability.test_fuzz import hostile_bodies

# Small limits, so that bodies at and past them are cheap to make.
LIMITS = Limits(max_numbers=6, max_text_chars=40)


def padded(body: bytes) -> bytes:
    """``body`` with trailing whitespace, which JSON ignores, up to the bulk path's size."""
    return body + b" " * max(0, BULK_DECODE_FROM - len(body))


def outcome(decode, body: bytes, limits: Limits = LIMITS) -> tuple:  # type: ignore[no-untyped-def]
    try:
        numbers, text = decode(body, limits)
    except InvalidPayload as error:
        return ("invalid", error.message, error.path)
    except MalformedPayload as error:
        return ("malformed", str(error))
    return ("ok", np.asarray(numbers, dtype=np.float64).tobytes(), text)


def assert_paths_agree(body: bytes) -> None:
    large = padded(body)
    assert outcome(decode_payload, large) == outcome(_decode_exactly, large)


EDGE_CASES = [
    # nested arrays that flatten to as many numbers as the array has elements
    b'{"numbers": [[1], [2]], "text": "t"}',
    b'{"numbers": [[], [1, 2]], "text": "t"}',
    b'{"numbers": [[1]], "text": "t"}',
    b'{"text": "t", "numbers": [1, [2]]}',
    # numbers at the edges of float64 and of 64-bit integers
    b'{"numbers": [1e400], "text": "t"}',
    b'{"numbers": [1.7976931348623157e308, -1.7976931348623158e308], "text": "t"}',
    b'{"numbers": [1.7976931348623159e308], "text": "t"}',
    b'{"numbers": [5e-324, 2e-324, 1e-400, -1e-400], "text": "t"}',
    b'{"numbers": [-0, -0.0, 0, -0e5, 0.0e-7], "text": "t"}',
    b'{"numbers": [9007199254740993, 9223372036854775807, 9223372036854775808], "text": "t"}',
    b'{"numbers": [18446744073709551615, 18446744073709551616, -9223372036854775809], "text": "t"}',
    b'{"numbers": [123456789012345678901234567890, 1.000000000000000111022302462515654042363166809082031250001],'
    b' "text": "t"}',
    # limits, types, keys
    b'{"numbers": [], "text": "t"}',
    b'{"numbers": [1, 2, 3, 4, 5, 6, 7], "text": "t"}',
    b'{"numbers": [1], "text": ""}',
    b'{"numbers": [1], "text": "' + b"x" * 41 + b'"}',
    b'{"numbers": [1], "text": "' + "\u00e9".encode() * 40 + b'"}',
    b'{"numbers": [true], "text": "t"}',
    b'{"numbers": [null], "text": "t"}',
    b'{"numbers": {"a": 1}, "text": "t"}',
    b'{"numbers": [1], "text": ["t"]}',
    b'{"numbers": [1], "text": "t", "extra": 1}',
    b'{"numbers": [1]}',
    b'{"numbers": [1], "text": "a", "text": "b"}',
    b'{"numbers": [1], "numb\\u0065rs": [2], "text": "a"}',
    b'{"n\\u0075mbers": [1], "text": "a"}',
    # texts and encodings
    b'{"numbers": [1], "text": "\\ud800"}',
    b'{"numbers": [1], "text": "\\ud83d\\ude00 \\u0000 \\" \\\\ ]"}',
    b'{"numbers": [1], "text": "\xed\xa0\x80"}',
    b'{"numbers": [1], "text": "a\x01"}',
    b'\xef\xbb\xbf{"numbers": [1], "text": "t"}',
    b'{"numbers": [1], "text": "t"} x',
    b'{"numbers": [1], "text": "t"}{}',
    b'[{"numbers": [1], "text": "t"}]',
]


@pytest.mark.parametrize("body", EDGE_CASES)
def test_edge_cases_decode_alike(body: bytes) -> None:
    assert_paths_agree(body)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(hostile_bodies(), payload_documents()))
def test_any_body_decodes_alike(body: bytes) -> None:
    assert_paths_agree(body)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70), min_size=1, max_size=6),
    st.text(min_size=1, max_size=40),
)
def test_valid_payloads_take_the_bulk_path_with_the_same_values(numbers: list, text: str) -> None:
    body = padded(json.dumps({"numbers": numbers, "text": text}).encode())
    exact = outcome(_decode_exactly, body)
    assert exact[0] == "ok"
    bulk = _decode_in_bulk(body, LIMITS)
    if any(isinstance(number, int) and not -(2**63) <= number < 2**64 for number in numbers):
        return  # simdjson refuses integers beyond 64 bits; msgspec decides them
    assert bulk is not None
    assert outcome(lambda *_: bulk, body) == exact


def test_a_large_payload_takes_the_bulk_path() -> None:
    body = make_body(10_000, 100_000)
    numbers, text = decode_payload(body, Limits())
    assert isinstance(numbers, np.ndarray)  # simdjson's array, not msgspec's list
    exact_numbers, exact_text = _decode_exactly(body, Limits())
    assert numbers.tobytes() == np.array(exact_numbers).tobytes() and text == exact_text


def test_a_huge_payload_is_left_to_msgspec() -> None:
    # Past the bound, so that no process keeps a parser's buffers sized for it.
    body = make_body(10_000, 100_000)
    huge = body + b" " * (HUGE_BODY_BYTES + 1 - len(body))
    numbers, text = decode_payload(huge, Limits())
    assert isinstance(numbers, list)
    assert (numbers, text) == _decode_exactly(body, Limits())
    at_bound = huge[:-1]
    assert isinstance(decode_payload(at_bound, Limits())[0], np.ndarray)


def test_each_thread_parses_with_its_own_parser() -> None:
    from concurrent.futures import ThreadPoolExecutor

    bodies = [make_body(1_000 + index, 10_000, seed=index) for index in range(8)]
    expected = [np.array(_decode_exactly(body, Limits())[0]).tobytes() for body in bodies]
    with ThreadPoolExecutor(4) as threads:
        for _ in range(5):
            decoded = list(threads.map(lambda body: decode_payload(body, Limits())[0].tobytes(), bodies))
            assert decoded == expected


def judged_by_msgspec_alone(body: bytes, limits: Limits) -> tuple:
    """What msgspec says of the body itself, as the exact path did before long exponents were
    respelled: the reference for bodies with them."""
    try:
        payload = decoder_for(limits).decode(body)
    except msgspec.ValidationError as error:
        message, _, path = str(error).partition(" - at `")
        raise InvalidPayload(message, path[:-1] or "$") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise MalformedPayload(str(error)) from None
    duplicate = duplicate_key(body)
    if duplicate is not None:
        raise InvalidPayload("Duplicate object key", f"$.{duplicate}")
    return payload.numbers, payload.text


LONG_EXPONENT_TOKENS = [
    b"1e300",
    b"-1.7976931348623157e308",
    b"1.5E+299",
    b"5e-324",
    b"1e-400",
    b"-1e-400",
    b"1e400",
    b"-1E309",
    b"0e999",
    b"1e0300",
    b"123.456e-310",
    b"1e100",
    # not numbers, or not whole ones: they must keep their own errors
    b"01e300",
    b"1.e300",
    b"-e300",
    b"1e300.5",
    b"1e3000x",
    b"1e+-300",
    b".1e300",
    b"1e30e300",
]
OTHER_TOKENS = [b"1", b"-0", b"2.5", b"18446744073709551616", b"true", b"null", b'"1e300"', b"[1e300]", b"{}"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(LONG_EXPONENT_TOKENS + OTHER_TOKENS), min_size=1, max_size=8),
    st.sampled_from(
        [b"t", b"a 1e300 b", b"1e300", b'\\"1e300'],
    ),
    st.sampled_from(
        [
            '{"numbers": [%s], "text": "%s"}',
            '{"text": "%s2", "numbers": [%s1]}',
            '{"numbers": [%s], "1e300": 1, "text": "%s"}',
            '{"numbers": [%s], "text": "%s"',
            '{"numbers": [%s], "text": "%s"}x',
            '{"numbers": [%s], "numbers": [1], "text": "%s"}',
        ]
    ),
    st.integers(0, 2),
)
def test_numbers_with_long_exponents_are_judged_as_msgspec_judges_them(
    tokens: list[bytes], text: bytes, shape: str, cut: int
) -> None:
    numbers = b", ".join(tokens)
    if shape.startswith('{"text"'):
        body = shape.replace("%s2", "%s").encode() % (text, numbers[: len(numbers) - cut])
        body = body.replace(b"%s1", b"")
    else:
        body = shape.encode() % (numbers, text)
    large = padded(body)
    assert outcome(_decode_exactly, large, Limits()) == outcome(judged_by_msgspec_alone, large, Limits())


def test_many_numbers_with_long_exponents_are_judged_exactly() -> None:
    # Past the bulk path's bound and within it (where simdjson refuses the last element).
    many = b", ".join([b"1e300", b"-1.7976931348623157e308", b"2.5e-310", b"7"] * 40_000)
    for body in (
        b'{"numbers": [%s], "text": "a 1e300 text"}' % many,
        b'{"numbers": [%s, true], "text": "t"}' % many,
        b'{"numbers": [%s, 1e400], "text": "t"}' % many,
        b'{"numbers": [18446744073709551616, %s], "text": "t"}' % many,
        b'{"numbers": [%s], "text": "t"} x' % many,
    ):
        for limits in (Limits(), Limits(max_numbers=100_000)):
            assert outcome(decode_payload, body, limits) == outcome(judged_by_msgspec_alone, body, limits)


def test_an_unterminated_string_is_passed_over_whole() -> None:
    # Its text runs to the end of the body. The scan once tried again from each quote inside it,
    # each try running to the end: quadratic in escaped quotes (16 KB of them took 0.7 s).
    text = b'"\\"1e300 \\"1e300'
    assert _with_short_exponents(b'{"numbers": [1e300], "text": %s' % text) == b'{"numbers": [0.000], "text": %s' % text
    body = b'{"numbers": [1e300], "text": "' + b'\\"' * 1_000_000
    assert outcome(decode_payload, body, Limits()) == outcome(judged_by_msgspec_alone, body, Limits())


def test_a_huge_payload_with_long_exponents_is_read_by_simdjson_exactly() -> None:
    # A parser made for it: its numbers come as the array, the same values msgspec reads.
    numbers = b", ".join([b"1e300", b"-2.5e-310", b"1.7976931348623157e308", b"3"] * 120_000)
    body = b'{"numbers": [%s], "text": "a 1e300 text"}' % numbers
    assert len(body) > HUGE_BODY_BYTES
    decoded, text = decode_payload(body, Limits())
    assert isinstance(decoded, np.ndarray)
    assert outcome(lambda *_: (decoded, text), body, Limits()) == outcome(judged_by_msgspec_alone, body, Limits())
    for refused in (body.replace(b"]", b", true]", 1), body.replace(b"[", b"[18446744073709551616, ", 1)):
        assert outcome(decode_payload, refused, Limits()) == outcome(judged_by_msgspec_alone, refused, Limits())

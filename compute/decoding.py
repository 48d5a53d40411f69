"""A body's bytes to a validated payload: its numbers and its text, or the client's error.

msgspec is the schema and the judge: it decodes every small and every huge body and, for any
body, words the error. A body in between is decoded by simdjson first, which fills a float64
array straight from the JSON text instead of building a Python float per number, a list, and
then the array: 2.4 to 3.2 x faster from 14 KB up (docs/performance.md). Whatever that path is
not certain of (any error, any shape it does not expect) it leaves to msgspec, so both paths
accept the same bodies and yield the same values.

msgspec converts a number near the ends of the float range ("1e300", "1.7976931348623157e308")
some 300 times slower than others, about 10 us each: a 2 MB body of them held the event loop
for 3.6 s, a 25 MB one a worker for 19 s. Only an exponent of three digits brings a short number
there, so msgspec judges a larger body that has one by a copy in which every such finite number
reads "0.000..." instead: the same length, so the same errors at the same byte offsets. The
numbers themselves are then read by Python's float(), which rounds correctly, as msgspec does;
in a body over HUGE_BODY_BYTES by simdjson first, with a parser of its own. A body under
BULK_DECODE_FROM is left to msgspec (at most about 9 ms of such numbers).
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading

import msgspec
import numpy as np
import simdjson

from compute.memory import HUGE_BODY_BYTES
from compute.schema import Limits, payload_type


class MalformedPayload(ValueError):
    """The body is not a JSON document (syntax, encoding, or NaN/Infinity literals)."""


class InvalidPayload(ValueError):
    """The body is JSON but not a valid payload; ``path`` locates the offending value."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message, path)
        self.message = message
        self.path = path


# msgspec reports "Expected `float`, got `bool` - at `$.numbers[3]`".
_ERROR_LOCATION = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)


@functools.lru_cache(maxsize=4)
def decoder_for(limits: Limits) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(payload_type(limits))


# From this size simdjson and the member scan decode a body faster than msgspec (bench.kernels
# measures the cut-over). Only up to HUGE_BODY_BYTES, though: a simdjson parser keeps buffers for
# the largest document it has parsed (about 40 MiB after a 17.5 MB body), in every process.
BULK_DECODE_FROM = 4096


def decode_payload(body: bytes, limits: Limits) -> tuple[np.ndarray | list[float], str]:
    """The numbers and text of ``body``. Raises MalformedPayload or InvalidPayload."""
    decoded = _decode_in_bulk(body, limits) if BULK_DECODE_FROM <= len(body) <= HUGE_BODY_BYTES else None
    return decoded if decoded is not None else _decode_exactly(body, limits)


def _decode_exactly(body: bytes, limits: Limits) -> tuple[np.ndarray | list[float], str]:
    slow = len(body) >= BULK_DECODE_FROM and _has_long_exponents(body)
    if slow and len(body) > HUGE_BODY_BYTES:
        # simdjson reads such numbers as fast as others; by a parser dropped with this body, so
        # that no process keeps buffers sized for it.
        decoded = _decode_in_bulk(body, limits, simdjson.Parser())
        if decoded is not None:
            return decoded
    try:
        payload = decoder_for(limits).decode(_with_short_exponents(body) if slow else body)
    except msgspec.ValidationError as error:
        match = _ERROR_LOCATION.match(str(error))
        assert match is not None  # the pattern matches every string
        raise InvalidPayload(match["message"], match["path"] or "$") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise MalformedPayload(str(error)) from None
    duplicate = duplicate_key(body)
    if duplicate is not None:
        raise InvalidPayload("Duplicate object key", f"$.{duplicate}")
    if slow:
        # A valid payload (the copy's judgement holds for the body): its numbers, read again.
        return list(map(float, _read_by_python.decode(body)["numbers"])), payload.text
    return payload.numbers, payload.text


# An exponent of three digits or more, by the case of its "e".
_LONG_EXPONENT = {marker: re.compile(marker + rb"[+-]?\d{3}") for marker in (b"e", b"E")}
# A whole JSON number with such an exponent (where one could be a value), or a string to pass over.
# An unterminated string runs to the end of the body, as in JSON: were it not matched, the scan
# would try again from each quote inside it, and each try run to the end (a text of escaped
# quotes, 16 KB of them, took 0.7 s).
_STRING_OR_LONG_EXPONENT_NUMBER = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|(?<![\w.+-])-?(?:0|[1-9]\d*)(?:\.\d+)?[eE][+-]?\d{3,}(?![\w.+-])',
    re.DOTALL,
)
# Untyped, with float literals read by float(): no number takes msgspec's slow conversion.
_read_by_python = msgspec.json.Decoder(float_hook=float)


def _has_long_exponents(body: bytes) -> bool:
    """Whether a number of ``body`` may have a three-digit exponent (a string's text may, too)."""
    try:
        members = _members(body)
    except ValueError:  # a key that is not UTF-8 or has a bad escape: the body is not valid
        members = None
    # A body of the expected shape has its numbers inside its arrays only; any other is searched whole.
    spans = [(0, len(body))] if members is None else [(start, end) for _, start, end in members if body[start] == 0x5B]
    for start, end in spans:
        for marker, pattern in _LONG_EXPONENT.items():
            # find() passes over plain digits several times faster than a search does.
            first = body.find(marker, start, end)
            if first >= 0 and pattern.search(body, first, end):
                return True
    return False


def _with_short_exponents(body: bytes) -> bytes:
    """``body`` with each finite number of a three-digit exponent spelled as 0.000... of its length."""

    def respell(match: re.Match[bytes]) -> bytes:
        token = match[0]
        if token[0] == 0x22 or not math.isfinite(float(token)):  # a string, or out of range
            return token
        return b"0." + b"0" * (len(token) - 2)

    return _STRING_OR_LONG_EXPONENT_NUMBER.sub(respell, body)


# One parser per thread: a simdjson parser serves one document at a time, and keeps its buffers.
_parsers = threading.local()


def _decode_in_bulk(
    body: bytes, limits: Limits, parser: simdjson.Parser | None = None
) -> tuple[np.ndarray, str] | None:
    """The payload by simdjson, or None where msgspec must decide (an error, an unexpected shape).

    By this thread's parser unless given one.
    """
    if parser is None:
        parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    document = numbers = None
    try:
        document = parser.parse(body)
        if not isinstance(document, simdjson.Object) or len(document) != 2:
            return None
        numbers, text = document.get("numbers"), document.get("text")
        if not isinstance(numbers, simdjson.Array) or not isinstance(text, str):
            return None
        count = len(numbers)
        if not (1 <= count <= limits.max_numbers and 1 <= len(text) <= limits.max_text_chars):
            return None
        # Refuses any element that is not a number (or beyond a float, or an integer beyond 64
        # bits), but flattens nested arrays: the member scan rules those out, and also a leading
        # byte-order mark, which simdjson skips and JSON does not allow.
        values = np.frombuffer(numbers.as_buffer(of_type="d"), dtype=np.float64)
    except (ValueError, TypeError, RuntimeError):  # simdjson's errors; UnicodeDecodeError is a ValueError
        return None
    finally:
        del document, numbers  # the parser refuses the next document while these proxies live
    names = _member_names(body)
    if values.size != count or names is None or _first_repeated(names) is not None:
        return None
    return values, text


# msgspec keeps the last of repeated keys; a client's value must never be dropped silently. A
# payload that decoded is a JSON object whose values are strings and arrays of numbers only, so
# a scan of its top-level members is exact and skips each array with one memchr for its "]".
_WS = rb"[ \t\r\n]*"
_STRING_CONTENT = rb'[^"\\]*(?:\\.[^"\\]*)*"'
_STRING = rb'"' + _STRING_CONTENT
_STRING_REST = re.compile(_STRING_CONTENT)
_OBJECT_START = re.compile(_WS + rb"\{")
_MEMBER_KEY = re.compile(_WS + rb"(" + _STRING + rb")" + _WS + rb":" + _WS)
_MEMBER_END = re.compile(_WS + rb"([,}])")


# Up to this size, three substring searches settle a body without escapes faster than the scan
# (0.8 vs 3.7 us at 300 bytes). Beyond it the scan wins by far, since it skips each array and
# string with one memchr, while the searches slow down on prose full of "\n" escapes (28 us vs
# 4.4 ms at 2.3 MB).
_SEARCHES_UP_TO = 1024


def duplicate_key(body: bytes) -> str | None:
    """The first repeated top-level key of a body that decoded as a payload, or None.

    Exact for every such body; a body the scan does not expect (one msgspec would not accept,
    e.g. with nested objects) is settled by a full parse instead.
    """
    if len(body) <= _SEARCHES_UP_TO and _each_key_spelled_once(body):
        return None
    return _duplicate_key_by_scanning(body)


def _each_key_spelled_once(body: bytes) -> bool:
    # The only keys are "numbers" and "text" (unknown fields are refused), and their letters can
    # be escaped only as \uXXXX: without one, a repeated key would spell out a second '"numbers"'
    # or '"text"'. (An escaped backslash before a "u" only costs the scan.)
    return b"\\u" not in body and body.count(b'"numbers"') == 1 and body.count(b'"text"') == 1


def _duplicate_key_by_scanning(body: bytes) -> str | None:
    names = _member_names(body)
    return _duplicate_key_by_parsing(body) if names is None else _first_repeated(names)


def _first_repeated(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _member_names(body: bytes) -> list[str] | None:
    """The top-level keys, in order, of a JSON object whose values are strings and arrays of
    numbers only; None for a body of any other shape (a nested array among them)."""
    members = _members(body)
    return None if members is None else [name for name, _, _ in members]


def _members(body: bytes) -> list[tuple[str, int, int]] | None:
    """Each top-level member's key and where its value starts and ends, as ``_member_names``."""
    start = _OBJECT_START.match(body)
    if start is None:
        return None
    members = []
    position = start.end()
    while True:
        key = _MEMBER_KEY.match(body, position)
        if key is None:
            return None
        name = json.loads(key[1]) if b"\\" in key[1] else key[1][1:-1].decode()
        position = value_start = key.end()
        if body.startswith(b"[", position):
            # An array of numbers holds no strings and no arrays: the first "]" closes it. In an
            # array of numbers and arrays, what follows the first "]" is "," and a value, or "]",
            # where the scan expects "," and a key, or "}": it returns None.
            closing = body.find(b"]", position)
            if closing < 0:
                return None
            position = closing + 1
        elif body.startswith(b'"', position):
            position = _string_end(body, position)
            if position < 0:
                return None
        else:
            return None
        members.append((name, value_start, position))
        end = _MEMBER_END.match(body, position)
        if end is None:
            return None
        if end[1] == b"}":
            return members
        position = end.end()


def _string_end(body: bytes, opening: int) -> int:
    """The position after the string opened at ``opening`` (-1 if unterminated)."""
    quote = body.find(b'"', opening + 1)
    if quote >= 0 and body[quote - 1] != 0x5C:
        return quote + 1  # the usual text without escaped quotes: one memchr
    rest = _STRING_REST.match(body, opening + 1)
    return -1 if rest is None else rest.end()


def _duplicate_key_by_parsing(body: bytes) -> str | None:
    duplicates: list[str] = []

    def record_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        names = [name for name, _ in pairs]
        duplicates.extend(name for index, name in enumerate(names) if name in names[:index])
        return dict(pairs)

    json.loads(body, object_pairs_hook=record_duplicates)
    return duplicates[0] if duplicates else None

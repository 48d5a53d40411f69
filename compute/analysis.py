"""The analysis entry point: bytes in, findings out. Runs inline, in a thread or in a pool worker."""

from __future__ import annotations

import functools
import re

import msgspec

from compute.numeric import analyze_numbers
from compute.schema import Limits, NumericAnalysis, TextAnalysis, payload_type
from compute.text import analyze_text

Findings = tuple[NumericAnalysis, TextAnalysis]


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


def analyze_body(body: bytes, limits: Limits) -> Findings:
    """Decode and validate ``body``, then analyse it. Raises MalformedPayload or InvalidPayload."""
    try:
        payload = decoder_for(limits).decode(body)
    except msgspec.ValidationError as error:
        match = _ERROR_LOCATION.match(str(error))
        assert match is not None  # the pattern matches every string
        raise InvalidPayload(match["message"], match["path"] or "$") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise MalformedPayload(str(error)) from None
    return analyze_numbers(payload.numbers), analyze_text(payload.text)

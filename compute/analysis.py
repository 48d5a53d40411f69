"""The analysis entry point: bytes in, findings out. Runs inline, in a thread or in a pool worker."""

from __future__ import annotations

from compute.decoding import decode_payload
from compute.numeric import analyze_numbers
from compute.schema import Limits, NumericAnalysis, TextAnalysis
from compute.text import analyze_text

Findings = tuple[NumericAnalysis, TextAnalysis]


def analyze_body(body: bytes, limits: Limits) -> Findings:
    """Decode and validate ``body``, then analyse it. Raises MalformedPayload or InvalidPayload."""
    numbers, text = decode_payload(body, limits)
    return analyze_numbers(numbers), analyze_text(text)

"""The payload and result types. They are the schema: validation, OpenAPI and docs come from here."""

from __future__ import annotations

from typing import Annotated

import msgspec


class Limits(msgspec.Struct, frozen=True):
    """Size limits a payload is validated against."""

    max_numbers: int = 1_000_000
    max_text_chars: int = 5_000_000


class NumericAnalysis(msgspec.Struct, frozen=True):
    minimum: float
    maximum: float
    mean: float
    median: float
    standard_deviation: Annotated[
        float | None,
        msgspec.Meta(
            description=(
                "Sample standard deviation (n - 1); 0.0 for a single number; null when it is beyond "
                "the float range (values of both signs near 1.8e308)."
            )
        ),
    ]
    count: int


class TextAnalysis(msgspec.Struct, frozen=True):
    word_count: Annotated[int, msgspec.Meta(description="Runs of non-whitespace characters.")]
    character_count: Annotated[int, msgspec.Meta(description="Unicode code points.")]
    character_count_no_spaces: Annotated[int, msgspec.Meta(description="Code points that are not whitespace.")]
    sentence_count: Annotated[
        int,
        msgspec.Meta(
            description=(
                "Stretches containing a letter or digit, ending at a run of . ! ? followed by "
                "whitespace or the end, at a paragraph break, or at the end of the text."
            )
        ),
    ]
    paragraph_count: Annotated[int, msgspec.Meta(description="Blocks of text separated by one or more blank lines.")]


class Analysis(msgspec.Struct, frozen=True):
    numeric_analysis: NumericAnalysis
    text_analysis: TextAnalysis
    processing_time_ms: Annotated[float, msgspec.Meta(description="Time spent decoding and analysing the payload.")]


def payload_type(limits: Limits) -> type[msgspec.Struct]:
    """Build the request type for the configured limits.

    Limits are settings, so the type is built at start-up; the same call in every pool worker
    yields an identical schema.
    """
    numbers = Annotated[
        list[float],
        msgspec.Meta(
            min_length=1,
            max_length=limits.max_numbers,
            description="Finite JSON numbers (integers are taken as floats).",
        ),
    ]
    text = Annotated[
        str,
        msgspec.Meta(min_length=1, max_length=limits.max_text_chars, description="Text to analyse."),
    ]
    return msgspec.defstruct(
        "Payload",
        [("numbers", numbers), ("text", text)],
        forbid_unknown_fields=True,
        frozen=True,
    )

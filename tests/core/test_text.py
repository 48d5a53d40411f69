"""The text rules of docs/api.md, by example and against an independent reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import astuple

from compute.text import analyze_text


def reference(text: str) -> tuple[int, int, int, int, int]:
    """The rules, character by character: (words, chars, chars without spaces, sentences, paragraphs)."""
    words = sum(1 for i, c in enumerate(text) if not c.isspace() and (i == 0 or text[i - 1].isspace()))
    paragraphs: list[str] = []
    current: list[str] = []
    for line in text.split("\n"):
        if line.isspace() or not line:
            if current:
                paragraphs.append("\n".join(current))
            current = []
        else:
            current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return (
        words,
        len(text),
        sum(1 for c in text if not c.isspace()),
        sum(_reference_sentences(paragraph) for paragraph in paragraphs),
        len(paragraphs),
    )


def _reference_sentences(paragraph: str) -> int:
    count, has_letter_or_digit, i = 0, False, 0
    while i < len(paragraph):
        if paragraph[i] in ".!?":
            end = i
            while end < len(paragraph) and paragraph[end] in ".!?":
                end += 1
            if end == len(paragraph) or paragraph[end].isspace():
                count += has_letter_or_digit
                has_letter_or_digit = False
            i = end
            continue
        has_letter_or_digit |= paragraph[i].isalnum()
        i += 1
    return count + has_letter_or_digit


def counts(text: str) -> tuple[int, int, int, int, int]:
    """(words, chars, chars without spaces, sentences, paragraphs), the order of TextAnalysis."""
    return astuple(analyze_text(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sample text for analysis", (4, 24, 21, 1, 1)),  # the seed's example; its 25 was a typo
        ("Wait... What?!", (2, 14, 13, 2, 1)),
        ("Pi is 3.14 today", (4, 16, 13, 1, 1)),
        ("One. Two! Three? Four", (4, 21, 18, 4, 1)),
        ("...", (1, 3, 3, 0, 1)),
        ("   \t ", (0, 5, 0, 0, 0)),
        ("First paragraph.\n\nSecond one.", (4, 29, 25, 2, 2)),
        ("No stop\n\nat the end", (5, 19, 14, 2, 2)),  # a paragraph break ends a sentence
        ("Windows\r\n\r\nline ends", (3, 20, 15, 2, 2)),  # \r\n works like \n
        ("Lines\n  \t\nwith blanks\n\n\n\nend", (4, 28, 18, 3, 3)),  # a blank line holds only whitespace
        ("one line\nnext line", (4, 18, 15, 1, 1)),  # a single newline is not a paragraph break
        ("e.g. this", (2, 9, 8, 2, 1)),  # "." followed by whitespace ends a sentence
        ("naïve café — 東京!", (4, 16, 13, 1, 1)),  # code points, Unicode letters
        ("tab\tand\u00a0nbsp\u2003em", (4, 15, 12, 1, 1)),  # Unicode whitespace separates words
    ],
)
def test_rules(text: str, expected: tuple[int, int, int, int, int]) -> None:
    assert counts(text) == expected
    assert reference(text) == expected


text_alphabet = st.sampled_from(list("ab1 .!?\n\r\t\u00a0\u2028é_-") + ["\r\n", "\n\n", "...", " \n "])


@settings(max_examples=1500, deadline=None)
@given(st.lists(text_alphabet, max_size=40).map("".join))
def test_matches_reference_on_structured_text(text: str) -> None:
    assert counts(text) == reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_matches_reference_on_any_unicode(text: str) -> None:
    assert counts(text) == reference(text)

"""Text counts, following the rules in docs/api.md.

Whitespace is what ``str.isspace`` says; a letter or digit is what ``str.isalnum`` says.

Short texts are counted with regular expressions that state the rules directly. Long ones are
counted on an array of character classes in a few numpy passes, with the same rules restated on
positions (each step says which regular expression it replaces); both give identical counts.
"""

from __future__ import annotations

import re

import numpy as np

from compute.schema import TextAnalysis

# A paragraph runs from a non-whitespace character to the next blank line (one holding only
# whitespace) or the end of the text. "\r" is whitespace, so "\r\n" line ends need no special case.
_PARAGRAPH = re.compile(r"\S(?:[^\n]++|\n(?![^\S\n]*+\n))*+")
# A sentence runs from a letter or digit to the next sentence end (a run of terminators followed
# by whitespace or the end), paragraph break, or the end of the text. In between: characters that
# end nothing, terminators followed by something else, and single line breaks. Spelled out that
# way (and possessive), the engine skips ahead instead of trying the ends at every character.
_SENTENCE = re.compile(
    r"[^\W_]"
    r"(?:[^.!?\n]+|[.!?]+(?=[^\s.!?])|\n(?![^\S\n]*\n))*+"
    r"(?:[.!?]+(?=\s|\Z)|\n(?:[^\S\n]*\n)+|\Z)"
)
# From about this length the numpy passes beat the regular expressions (bench.kernels measures
# the cut-over).
_VECTORISED_FROM = 1536


def analyze_text(text: str) -> TextAnalysis:
    return _analyze_long(text) if len(text) >= _VECTORISED_FROM else _analyze_short(text)


def _analyze_short(text: str) -> TextAnalysis:
    words = text.split()
    return TextAnalysis(
        word_count=len(words),
        character_count=len(text),
        character_count_no_spaces=sum(map(len, words)),
        sentence_count=len(_SENTENCE.findall(text)),
        paragraph_count=len(_PARAGRAPH.findall(text)),
    )


# One character class per code point, so that each mask below is a single comparison (a SIMD
# pass that writes booleans) rather than a bit test and a conversion. The order matters: visible
# classes first, whitespace last. 0 marks a code point not looked at yet: ASCII is filled in now,
# other code points the first time a text contains them, from the same predicates the regular
# expressions use.
_UNKNOWN, _ALNUM, _TERMINATOR, _OTHER, _NEWLINE, _SPACE = range(6)
_CLASSES = np.zeros(0x110000, dtype=np.uint8)


def _class_of(code_point: int) -> int:
    char = chr(code_point)
    if char == "\n":
        return _NEWLINE
    if char.isspace():
        return _SPACE
    if char.isalnum():
        return _ALNUM
    return _TERMINATOR if char in ".!?" else _OTHER


_CLASSES[:128] = [_class_of(code_point) for code_point in range(128)]
# The same classes as a bytes.translate table: for ASCII text faster than ``take`` (whole text
# counts 2.12 vs 2.29 ms at 1 MB, 20.6 vs 24.4 ms at 5 MB).
_ASCII_CLASSES = _CLASSES[:128].tobytes() + bytes(128)  # ASCII text holds no byte >= 128


def _classes_of(text: str) -> np.ndarray:
    if text.isascii():
        return np.frombuffer(text.encode("ascii").translate(_ASCII_CLASSES), dtype=np.uint8)
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    classes = _CLASSES.take(code_points)
    unknown = code_points[classes == _UNKNOWN]
    if unknown.size:
        for code_point in np.unique(unknown).tolist():
            _CLASSES[code_point] = _class_of(code_point)
        classes = _CLASSES.take(code_points)
    return classes


def _stretches_holding(content: np.ndarray, cuts: np.ndarray) -> int:
    """How many of the stretches that the (ascending) ``cuts`` positions divide the text into
    hold a ``content`` position; no cut position is a content position."""
    if cuts.size == 0:
        return int(content.any())
    # One segment from each cut to the next (or the end), plus the stretch before the first cut.
    # (Segments rather than a compressed mask: branchy boolean indexing costs 4 x as much.)
    segments_holding = np.count_nonzero(np.logical_or.reduceat(content, cuts))
    return int(content[: cuts[0]].any()) + int(segments_holding)


def _analyze_long(text: str) -> TextAnalysis:
    classes = _classes_of(text)
    space = classes >= _NEWLINE
    visible = ~space
    # text.split(): a word starts at a non-whitespace character after whitespace or at the start.
    word_starts = visible.copy()
    word_starts[1:] &= space[:-1]
    # _PARAGRAPH's end, a blank line: two newlines with only whitespace between them. The second one
    # is the break.
    # (nonzero rather than np.flatnonzero, whose wrapper doubles the cost on a short text; on a bool
    # mask, which it searches ten times faster than bytes)
    newlines = (classes == _NEWLINE).nonzero()[0]
    breaks = newlines[:0]
    if newlines.size > 1:
        blank_between = ~np.logical_or.reduceat(visible, newlines)[:-1]
        breaks = newlines[1:][blank_between]
    # _SENTENCE's end: the last terminator of a run, followed by whitespace or the end.
    sentence_cuts = classes == _TERMINATOR
    sentence_cuts[:-1] &= space[1:]
    sentence_cuts[breaks] = True
    alnum = classes == _ALNUM
    return TextAnalysis(
        word_count=int(np.count_nonzero(word_starts)),
        character_count=len(text),
        character_count_no_spaces=int(np.count_nonzero(visible)),
        sentence_count=_stretches_holding(alnum, sentence_cuts.nonzero()[0]),
        paragraph_count=_stretches_holding(visible, breaks),
    )

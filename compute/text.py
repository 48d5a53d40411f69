"""Text counts, following the rules in docs/api.md.

Whitespace is what ``str.isspace`` says; a letter or digit is what ``str.isalnum`` says.

Short texts are counted with regular expressions that state the rules directly. Long ones are
counted on an array of character classes in a few numpy passes per block, with the same rules
restated on positions (each step says which regular expression it replaces); both give identical
counts.
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


# Long texts are counted a block at a time, so that a block's classes and masks stay in the core's
# own cache instead of streaming a text-sized array through memory for every pass (1 MB
# 3.8 -> 3.0 ms, 5 MB 21 -> 16 ms; 64 and 256 Ki characters were slower). The counts that cross
# a block's edge carry over: _Stretches, _BlankLines, the previous character.
_BLOCK_CHARS = 1 << 17


class _Stretches:
    """Counts, block by block, the stretches that cut positions divide the text into and that
    hold a content position; no cut position is a content position."""

    __slots__ = ("closed", "open_holds")

    def __init__(self) -> None:
        self.closed = 0  # stretches that a cut has ended and that hold content
        self.open_holds = False  # whether the stretch still open at the block's start holds content

    def add(self, content: np.ndarray, cuts: np.ndarray) -> None:
        """Take the next block's ``content`` mask and its (ascending) ``cuts`` positions."""
        if cuts.size == 0:
            self.open_holds = self.open_holds or bool(content.any())
            return
        # One segment from each cut to the next (or the block's end). (Segments rather than a
        # compressed mask: branchy boolean indexing costs 4 x as much.)
        segments = np.logical_or.reduceat(content, cuts)
        first_holds = self.open_holds or bool(content[: cuts[0]].any())
        self.closed += int(first_holds) + int(np.count_nonzero(segments[:-1]))
        self.open_holds = bool(segments[-1])

    @property
    def count(self) -> int:
        return self.closed + int(self.open_holds)


class _BlankLines:
    """Finds, block by block, the paragraph breaks: _PARAGRAPH's end, a blank line, is two
    newlines with only whitespace between them, and the second one is the break."""

    __slots__ = ("after_newline", "visible_since_newline")

    def __init__(self) -> None:
        self.after_newline = False  # a newline came before this block ...
        self.visible_since_newline = False  # ... and a non-whitespace character after the last one

    def breaks(self, block: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """The break positions in the next ``block`` of classes, whose ``visible`` mask is given."""
        # (nonzero rather than np.flatnonzero, whose wrapper doubles the cost on a short text; on a
        # bool mask, which it searches ten times faster than bytes)
        newlines = (block == _NEWLINE).nonzero()[0]
        if newlines.size == 0:
            self.visible_since_newline = self.visible_since_newline or bool(visible.any())
            return newlines
        visible_after = np.logical_or.reduceat(visible, newlines)  # from each newline to the next
        breaks = newlines[1:][~visible_after[:-1]]
        if self.after_newline and not (self.visible_since_newline or visible[: newlines[0]].any()):
            breaks = np.concatenate((newlines[:1], breaks))
        self.after_newline = True
        self.visible_since_newline = bool(visible_after[-1])
        return breaks


def _analyze_long(text: str) -> TextAnalysis:
    classes = _classes_of(text)
    words = visible_count = 0
    blank_lines, sentences, paragraphs = _BlankLines(), _Stretches(), _Stretches()
    after_space = True  # text.split(): the text's start counts as whitespace before a word
    for start in range(0, classes.size, _BLOCK_CHARS):
        # One character past the block too: whether a terminator ends a sentence depends on it.
        reach = classes[start : start + _BLOCK_CHARS + 1]
        block = reach[:_BLOCK_CHARS]
        space_reach = reach >= _NEWLINE
        space = space_reach[: block.size]
        visible = ~space
        # text.split(): a word starts at a non-whitespace character after whitespace or at the start.
        words += int(visible[0] and after_space) + int(np.count_nonzero(visible[1:] & space[:-1]))
        after_space = bool(space[-1])
        visible_count += int(np.count_nonzero(visible))
        breaks = blank_lines.breaks(block, visible)
        # _SENTENCE's end: the last terminator of a run, followed by whitespace or the end.
        sentence_cuts = block == _TERMINATOR
        followed_by_space = space_reach[1:]
        sentence_cuts[: followed_by_space.size] &= followed_by_space
        sentence_cuts[breaks] = True
        sentences.add(block == _ALNUM, sentence_cuts.nonzero()[0])
        paragraphs.add(visible, breaks)
    return TextAnalysis(
        word_count=words,
        character_count=len(text),
        character_count_no_spaces=visible_count,
        sentence_count=sentences.count,
        paragraph_count=paragraphs.count,
    )

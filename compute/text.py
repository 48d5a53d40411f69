"""Text counts, following the rules in docs/api.md.

Whitespace is what ``str.isspace`` says; a letter or digit is what ``str.isalnum`` says.
"""

from __future__ import annotations

import re

from compute.schema import TextAnalysis

# A blank line holds only whitespace; one or more of them separate paragraphs. "\r" is
# whitespace, so "\r\n" line ends need no special case.
_PARAGRAPH_BREAK = re.compile(r"\n(?:[^\S\n]*\n)+")
# A run of terminators ends a sentence when whitespace or the end of the paragraph follows.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|\Z)")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")


def analyze_text(text: str) -> TextAnalysis:
    words = text.split()
    paragraphs = [block for block in _PARAGRAPH_BREAK.split(text) if not block.isspace() and block]
    return TextAnalysis(
        word_count=len(words),
        character_count=len(text),
        character_count_no_spaces=sum(map(len, words)),
        sentence_count=sum(_count_sentences(paragraph) for paragraph in paragraphs),
        paragraph_count=len(paragraphs),
    )


def _count_sentences(paragraph: str) -> int:
    return sum(1 for stretch in _SENTENCE_END.split(paragraph) if _LETTER_OR_DIGIT.search(stretch))

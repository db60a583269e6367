"""Split a document into passages of at most `size` tokens that overlap by about `overlap` tokens.

No Django here. A passage never crosses a heading (each section is chunked apart, its heading kept beside it); it
ends at a paragraph's end when the next paragraph does not fit whole, else at a sentence's end; a sentence longer
than a passage is cut between tokens. The next passage of a section starts with the last sentences of the one
before (at most `overlap` tokens), so a fact that straddles the cut is whole in one of them.

Tokens are counted with the base model's tokenizer (a `tokenizers.Tokenizer`, which needs no torch): `encode`
gives each token's character offsets, so one encoding of a section counts every span of it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from apps.knowledge.extract import Section

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])|\n")


@dataclass
class Passage:
    ordinal: int
    heading: str
    text: str
    token_count: int
    start: int  # character offsets in the document's text (sections joined by a blank line)
    end: int


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    paragraph_end: bool


class _Counter:
    """Tokens of any span of one text, from a single encoding (token end offsets, sorted)."""

    def __init__(self, tokenizer, text: str):
        encoding = tokenizer.encode(text, add_special_tokens=False)
        self.starts = [a for a, _ in encoding.offsets]
        self.ends = [b for _, b in encoding.offsets]

    def count(self, start: int, end: int) -> int:
        return max(0, bisect.bisect_right(self.starts, end - 1) - bisect.bisect_left(self.ends, start + 1))

    def cut(self, start: int, end: int, size: int) -> list[tuple[int, int]]:
        """[start, end) in pieces of at most `size` tokens, cut at token boundaries."""
        first = bisect.bisect_left(self.ends, start + 1)
        last = bisect.bisect_right(self.starts, end - 1)
        pieces, piece_start = [], start
        for index in range(first + size, last, size):
            boundary = self.starts[index]
            if boundary > piece_start:
                pieces.append((piece_start, boundary))
                piece_start = boundary
        pieces.append((piece_start, end))
        return pieces


def _units(text: str, counter: _Counter, size: int) -> list[_Unit]:
    units = []
    paragraph_start = 0
    for match in [*_PARAGRAPH.finditer(text), None]:
        paragraph_end = match.start() if match else len(text)
        spans, sentence_start = [], paragraph_start
        for cut in _SENTENCE_END.finditer(text, paragraph_start, paragraph_end):
            spans.append((sentence_start, cut.end()))
            sentence_start = cut.end()
        spans.append((sentence_start, paragraph_end))
        spans = [(a, b) for a, b in spans if text[a:b].strip()]
        for i, (a, b) in enumerate(spans):
            last = i == len(spans) - 1
            tokens = counter.count(a, b)
            if tokens <= size:
                units.append(_Unit(a, b, tokens, last))
                continue
            pieces = counter.cut(a, b, size)
            for j, (pa, pb) in enumerate(pieces):
                units.append(_Unit(pa, pb, counter.count(pa, pb), last and j == len(pieces) - 1))
        paragraph_start = match.end() if match else len(text)
    return units


def _paragraph_rest(units: list[_Unit], index: int) -> int:
    """Tokens from units[index] to the end of its paragraph."""
    total = 0
    for unit in units[index:]:
        total += unit.tokens
        if unit.paragraph_end:
            break
    return total


def chunk_sections(sections: list[Section], *, tokenizer, size: int, overlap: int) -> list[Passage]:
    if size < 8 or not 0 <= overlap < size // 2 + 1:
        raise ValueError("a passage needs at least 8 tokens, and an overlap under half of them")
    passages: list[Passage] = []
    offset = 0
    for section in sections:
        text = section.text
        counter = _Counter(tokenizer, text)
        units = _units(text, counter, size)
        i = 0
        while i < len(units):
            first, tokens, j = i, 0, i
            while j < len(units) and tokens + units[j].tokens <= size:
                tokens += units[j].tokens
                j += 1
                # End at this paragraph's end if the next paragraph does not fit whole, once the passage is half full.
                if (units[j - 1].paragraph_end and j < len(units) and tokens >= size // 2
                        and tokens + _paragraph_rest(units, j) > size):
                    break
            j = max(j, first + 1)
            start, end = units[first].start, units[j - 1].end
            passages.append(Passage(len(passages), section.heading[:300], text[start:end].strip(),
                                    counter.count(start, end), offset + start, offset + end))
            if j >= len(units):
                break
            # The next passage starts with the last units of this one that fit in `overlap` tokens.
            back, carried = j, 0
            while back - 1 > first and carried + units[back - 1].tokens <= overlap:
                back -= 1
                carried += units[back].tokens
            i = back
        offset += len(text) + 2  # Document.text joins the sections with a blank line
    return passages

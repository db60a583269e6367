"""The output filter against prompt extraction: a stream stops when it gives away what its creator keeps private.

Defence in depth beside the prompt's framing (`prompts.framed_instructions`): however the model was talked into
it, an answer is cut off once it reproduces

- `WINDOW` (8) or more consecutive words of the app's instructions (or of its prompt template's own text), or
- any string the creator marked secret (case-insensitive); the text that could be the start of a secret is held
  back until it is clear that it is not, so not even a prefix of a secret is sent.

It also stops whole-file extraction of an app's knowledge: knowledge is meant to be quoted, but an answer is cut
off once it has copied more than `QUOTE_LIMIT` (300) characters of one file verbatim (counted over the runs of
`WINDOW` or more words that it shares with the file's passages in the prompt), whatever it was asked.

What it cannot catch: a paraphrase, a translation, an encoding (base64, spelled out, one word per line with
numbering between), or the instructions given away a few words at a time across several answers.
"""

from __future__ import annotations

import re

WINDOW = 8
QUOTE_LIMIT = 300  # characters of one knowledge file an answer may copy verbatim
# Each piece is checked against the end of the answer only (what came before was checked already): this many
# characters hold the newest words and any secret (at most 200 characters), so a long answer costs no more per token.
TAIL_CHARS = 2000
_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _windows(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + WINDOW]) for i in range(len(words) - WINDOW + 1)}


class LeakGuard:
    def __init__(self, *, private_texts: list[str], secrets: list[str], quoted_files: dict[str, list[str]] | None = None):
        self.ngrams = set()
        for text in private_texts:
            self.ngrams.update(_windows(_words(text)))
        self.secrets = [s.lower() for s in secrets if s and s.strip()]
        # Each knowledge file's word windows, and which words of the answer were found in one of them.
        self.file_ngrams = {name: set().union(*(_windows(_words(t)) for t in texts))
                            for name, texts in (quoted_files or {}).items()}
        self.file_ngrams = {name: grams for name, grams in self.file_ngrams.items() if grams}
        self.quoted = {name: set() for name in self.file_ngrams}
        self.answer_words: list[str] = []  # the answer's complete words so far (for the quote count)
        self.scanned = 0  # where the next word of the answer starts
        self.text = ""  # everything the model said so far
        self.sent = 0  # how much of it went out
        self.tripped = False
        self.reason = ""  # why it tripped: "instructions", "secret" or "knowledge"

    @property
    def active(self) -> bool:
        return bool(self.ngrams or self.secrets or self.file_ngrams)

    def feed(self, delta: str) -> str:
        """The part of the answer that may go out now ("" once tripped)."""
        if self.tripped:
            return ""
        self.text += delta
        lowered = self.text[-TAIL_CHARS:].lower()
        if any(secret in lowered for secret in self.secrets):
            self.reason = "secret"
        elif self._repeats_instructions(lowered):
            self.reason = "instructions"
        elif self.file_ngrams and self._quotes_too_much(final=False):
            self.reason = "knowledge"
        if self.reason:
            self.tripped = True
            return ""
        safe_end = len(self.text) - self._held_back(lowered)
        out, self.sent = self.text[self.sent:safe_end], max(self.sent, safe_end)
        return out

    def flush(self) -> str:
        """The held-back tail once the answer has ended (it turned out to be no secret)."""
        if self.tripped:
            return ""
        if self.file_ngrams and self._quotes_too_much(final=True):
            self.tripped, self.reason = True, "knowledge"
            return ""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out

    def _quotes_too_much(self, *, final: bool) -> bool:
        """Reads the answer's new complete words (the last one too once the answer ended) and tells whether the
        words found in a window of one file add up to more than QUOTE_LIMIT characters (a space each between)."""
        end = len(self.text)
        for match in _WORD.finditer(self.text, self.scanned):
            if match.end() == end and not final:
                break  # the word may go on in the next piece
            self.answer_words.append(match.group().lower())
            self.scanned = match.end()
            last = len(self.answer_words)
            if last < WINDOW:
                continue
            window = tuple(self.answer_words[last - WINDOW:])
            for name, grams in self.file_ngrams.items():
                if window in grams:
                    self.quoted[name].update(range(last - WINDOW, last))
        return any(sum(len(self.answer_words[i]) + 1 for i in positions) > QUOTE_LIMIT
                   for positions in self.quoted.values())

    def _repeats_instructions(self, tail: str) -> bool:
        if not self.ngrams:
            return False
        words = _words(tail)
        # Only the newest windows can be new; an unfinished last word is checked on the next piece too.
        tail = words[-(WINDOW + 4):]
        return any(tuple(tail[i:i + WINDOW]) in self.ngrams for i in range(len(tail) - WINDOW + 1))

    def _held_back(self, lowered: str) -> int:
        """How many characters at the end could be the beginning of a secret."""
        longest = 0
        for secret in self.secrets:
            for size in range(min(len(secret) - 1, len(lowered)), longest, -1):
                if lowered.endswith(secret[:size]):
                    longest = size
                    break
        return longest

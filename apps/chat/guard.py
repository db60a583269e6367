"""The output filter against prompt extraction: a stream stops when it gives away what its creator keeps private.

Defence in depth beside the prompt's framing (`prompts.framed_instructions`): however the model was talked into
it, an answer is cut off once it reproduces

- `WINDOW` (8) or more consecutive words of the app's instructions (or of its prompt template's own text), or
- any string the creator marked secret (case-insensitive); the text that could be the start of a secret is held
  back until it is clear that it is not, so not even a prefix of a secret is sent.

What it cannot catch: a paraphrase, a translation, an encoding (base64, spelled out, one word per line with
numbering between), or the instructions given away a few words at a time across several answers.
"""

from __future__ import annotations

import re

WINDOW = 8
# Each piece is checked against the end of the answer only (what came before was checked already): this many
# characters hold the newest words and any secret (at most 200 characters), so a long answer costs no more per token.
TAIL_CHARS = 2000
_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class LeakGuard:
    def __init__(self, *, private_texts: list[str], secrets: list[str]):
        self.ngrams = set()
        for text in private_texts:
            words = _words(text)
            self.ngrams.update(tuple(words[i:i + WINDOW]) for i in range(len(words) - WINDOW + 1))
        self.secrets = [s.lower() for s in secrets if s and s.strip()]
        self.text = ""  # everything the model said so far
        self.sent = 0  # how much of it went out
        self.tripped = False

    @property
    def active(self) -> bool:
        return bool(self.ngrams or self.secrets)

    def feed(self, delta: str) -> str:
        """The part of the answer that may go out now ("" once tripped)."""
        if self.tripped:
            return ""
        self.text += delta
        lowered = self.text[-TAIL_CHARS:].lower()
        if any(secret in lowered for secret in self.secrets) or self._repeats_instructions(lowered):
            self.tripped = True
            return ""
        safe_end = len(self.text) - self._held_back(lowered)
        out, self.sent = self.text[self.sent:safe_end], max(self.sent, safe_end)
        return out

    def flush(self) -> str:
        """The held-back tail once the answer has ended (it turned out to be no secret)."""
        if self.tripped:
            return ""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out

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

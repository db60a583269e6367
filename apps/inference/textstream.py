"""Turning generated token ids into text pieces: incremental decoding and stop strings."""

from __future__ import annotations


class TextAssembler:
    """Decodes a growing list of token ids into text, holding back what is not yet safe to show.

    NUL characters never come out. Held back: an incomplete UTF-8 character (decodes to U+FFFD) and any tail that could be the start of a stop
    string. When a stop string appears, the text is cut just before it and `stopped` turns True; the stop string
    itself is never shown.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far (before any stop cut)
        self.emitted = 0  # characters of self.text already handed out
        self.stopped = False
        # Decoding restarts from a recent token so that each step costs a few tokens, not the whole answer.
        self._prefix_ids = 0
        self._prefix_text = ""

    def add(self, token_id: int) -> str:
        """Append one token; return the newly safe text (possibly empty)."""
        self.ids.append(token_id)
        # NUL is dropped: the tokenizer has a byte token for it (an untrained model emits it), and PostgreSQL text
        # cannot hold it, so an answer with one could be shown but never saved.
        window = self.tokenizer.decode(self.ids[self._prefix_ids :], skip_special_tokens=True).replace("\x00", "")
        if window.endswith("\ufffd"):
            return ""  # the rest of this character is in the next token
        self.text = self._prefix_text + window
        if len(self.ids) - self._prefix_ids > 8:
            self._prefix_ids = len(self.ids)
            self._prefix_text = self.text
        return self._release()

    def _release(self) -> str:
        if self.stop:
            cut = min((i for i in (self.text.find(s) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.stopped = True
                piece = self.text[self.emitted : cut] if cut > self.emitted else ""
                self.text = self.text[:cut]
                self.emitted = len(self.text)
                return piece
        safe = len(self.text) - self._held_back()
        if safe <= self.emitted:
            return ""
        piece = self.text[self.emitted : safe]
        self.emitted = safe
        return piece

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:n]):
                    longest = max(longest, n)
                    break
        return longest

    def flush(self) -> str:
        """At the end: release whatever was held back (it can no longer become a stop string)."""
        if self.stopped:
            return ""
        piece = self.text[self.emitted :]
        self.emitted = len(self.text)
        return piece

"""Streaming detokenization for the generation engine: token ids in, text that is safe to show out."""

from __future__ import annotations


class TextStream:
    """Token ids in, safe text out: never half a UTF-8 character, never the start of a stop string.

    Decodes a short window of ids and emits what it adds beyond the window's previous text, so tokenizers whose
    tokens decode differently in context (SentencePiece spaces, byte-level BPE pieces of one character) still
    give exact text. A window that ends in U+FFFD is an incomplete character: wait for the next token.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...] = (), context: list[int] | None = None):
        self.tokenizer, self.stop = tokenizer, stop
        self.ids = list(context or [])[-4:]  # a little prompt context so the first token decodes as in context
        self.prefix, self.read = 0, len(self.ids)
        self.text = ""  # all text decoded so far (may hold an unsent stop-string prefix)
        self.sent = 0  # characters of `text` already returned
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add one token; returns the text that is now safe to show (maybe ""). Sets `stopped` at a stop string."""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self.prefix, self.read = self.read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The rest of the text at the end of generation (an incomplete character decodes as U+FFFD)."""
        if not self.stopped and self.read < len(self.ids):
            self.text += self._decode(self.ids[self.prefix :])[len(self._decode(self.ids[self.prefix : self.read])) :]
            self.read = len(self.ids)
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        if self.stopped:
            return ""
        end = len(self.text)
        if self.stop:
            start = max(0, self.sent - max(map(len, self.stop)))
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                end, self.stopped = min(hits), True
            elif not final:
                end -= _held_back(self.text, self.stop)
        out, self.sent = self.text[self.sent : end], max(self.sent, end)
        return out


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could begin a stop string (not safe to send yet)."""
    for n in range(min(len(text), max(map(len, stops)) - 1), 0, -1):
        if any(s.startswith(text[-n:]) for s in stops):
            return n
    return 0

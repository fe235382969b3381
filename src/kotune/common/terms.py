"""Finding listed terms in Korean and English text: self-instruct's blacklist and the server's `words:` moderation.

Korean terms match inside an eojeol, because particles attach to them (사진을) and compounds are written without
spaces (가족사진); English terms match as whole words (with a plural s), so "art" does not flag "start". Text and
terms are NFKC-normalised and case-folded first, so full-width letters (ＦＯＯ), compatibility jamo and
precomposed/decomposed Hangul (NFD from macOS file names) all meet the same term. Exceptions are words that contain
a term but are about something else (그림자 holds 그림); they are blanked out before terms are looked for.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable


def normalize(text: str) -> str:
    """NFKC, then case-folded: the form both terms and text are compared in."""
    return unicodedata.normalize("NFKC", text).casefold()


class TermMatcher:
    """`find(text)` returns the first listed term (or the text a pattern matched) found in `text`, else None.

    Args:
        terms: words; ASCII ones match whole words (plural s allowed), others anywhere inside a word.
        exceptions: words blanked out of the text before matching (longest first, so a longer exception wins).
        patterns: regular expressions, searched case-insensitively in the normalised text.
    """

    def __init__(self, terms: Iterable[str], exceptions: Iterable[str] = (), patterns: Iterable[re.Pattern] = ()):
        terms = [t for t in dict.fromkeys(normalize(t).strip() for t in terms) if t]
        english = [t for t in terms if t.isascii()]
        self._inside = [t for t in terms if not t.isascii()]
        self._english = (re.compile(r"\b(?:" + "|".join(map(re.escape, english)) + r")s?\b") if english else None)
        self._exceptions = sorted({normalize(e).strip() for e in exceptions} - {""}, key=len, reverse=True)
        self._patterns = list(patterns)

    def find(self, text: str) -> str | None:
        return self.find_normalized(self.prepare(text))

    def prepare(self, text: str) -> str:
        """`text` normalised with the exceptions blanked out: prepare once when several matchers share them."""
        text = normalize(text)
        for word in self._exceptions:
            text = text.replace(word, " ")
        return text

    def find_normalized(self, text: str) -> str | None:
        """As `find`, for text that `prepare` already normalised."""
        if self._english and (m := self._english.search(text)):
            return m.group(0)
        found = next((t for t in self._inside if t in text), None)
        if found is None:
            found = next((m.group(0) for p in self._patterns if (m := p.search(text))), None)
        return found

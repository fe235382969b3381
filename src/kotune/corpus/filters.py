"""Korean quality filters as datatrove filters: each drops a document with a named reason, which datatrove
counts per filter (`dropped_<reason>` in the stats). Gopher's repetition rules are datatrove's own filter, given
eojeol (space-separated units) as its words: Gopher counts English words, and an eojeol is the Korean unit that
a space delimits, so its n-gram shares mean the same thing."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.word_tokenizers import WordTokenizer

from kotune.corpus.config import KoreanFilterConfig

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LETTER = re.compile(r"[^\W\d_]")  # word characters less digits and underscore: letters of any script
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# Punctuation that ordinary Korean prose uses; any other non-letter, non-digit character counts as a symbol.
_ORDINARY = set(".,?!'\"()[]{}<>~-:;%/·…‘’“”「」『』《》〈〉、。")
# The last syllable of a finished Korean sentence: declarative 다, polite 요/죠, interrogative 까/니/나, and the
# casual endings of conversation (어/아/야/지/네/게/걸/군/래/자/라/해/대/데).
_SENTENCE_END_SYLLABLES = set("다요죠까니나어아야지네게걸군래자라해대데")
_TRAILING = "\"')]}»」』”’ ~^;"


def _non_space(text: str) -> int:
    return sum(1 for c in text if not c.isspace())


class EojeolTokenizer(WordTokenizer):
    """Words are eojeol: Korean writes a space between them (a noun with its particles, a verb with its endings)."""

    def __init__(self):
        super().__init__("ko")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def hangul_share(text: str) -> float | None:
    """Share of Hangul among letters (None when the text has no letters)."""
    letters = len(_LETTER.findall(text))
    return len(_HANGUL.findall(text)) / letters if letters else None


def symbol_ratio(text: str) -> float:
    """Share of symbols (not letters, digits, spaces or ordinary punctuation) among non-space characters."""
    chars = [c for c in text if not c.isspace()]
    symbols = sum(1 for c in chars if not c.isalnum() and c not in _ORDINARY
                  and not unicodedata.category(c).startswith("M"))
    return symbols / len(chars) if chars else 0.0


def url_ratio(text: str) -> float:
    """Share of non-space characters that belong to URLs."""
    total = _non_space(text)
    return sum(len(m.group()) for m in _URL.finditer(text)) / total if total else 0.0


def ends_like_sentence(line: str) -> bool:
    """Whether a line ends like a finished Korean sentence (ending syllable or . ? ! …), after closing quotes."""
    line = line.rstrip().rstrip(_TRAILING)
    return bool(line) and (line[-1] in ".?!…" or line[-1] in _SENTENCE_END_SYLLABLES)


def sentence_end_share(text: str) -> float:
    lines = [line for line in text.splitlines() if line.strip()]
    return sum(map(ends_like_sentence, lines)) / len(lines) if lines else 0.0


class KoreanFilter(BaseFilter):
    """Script, length, symbol, URL and sentence-ending checks; the first failed check names the reason."""

    name = "🇰🇷 Korean quality"

    def __init__(self, cfg: KoreanFilterConfig):
        super().__init__()
        self.cfg = cfg

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        c, text = self.cfg, doc.text
        share = hangul_share(_URL.sub(" ", text))  # URLs are judged by their own ratio
        if c.min_hangul_share is not None and (share is None or share < c.min_hangul_share):
            return False, "hangul_share"
        chars, eojeol = _non_space(text), len(text.split())
        if (c.min_chars is not None and chars < c.min_chars) or (c.min_eojeol is not None and eojeol < c.min_eojeol):
            return False, "too_short"
        if (c.max_chars is not None and chars > c.max_chars) or (c.max_eojeol is not None and eojeol > c.max_eojeol):
            return False, "too_long"
        if c.max_url_ratio is not None and url_ratio(text) > c.max_url_ratio:
            return False, "url_ratio"
        if c.max_symbol_ratio is not None and symbol_ratio(_URL.sub(" ", text)) > c.max_symbol_ratio:
            return False, "symbol_ratio"
        if c.min_sentence_end_share is not None and sentence_end_share(text) < c.min_sentence_end_share:
            return False, "sentence_end"
        return True


class KoreanRepetitionFilter(GopherRepetitionFilter):
    """Gopher's repetition rules (datatrove's filter) over eojeol n-grams.

    datatrove counts the most frequent n-gram even when it occurs once, which fails every short document (five
    eojeol: any 2-gram is over 20% of the text). Gopher tuned its shares on web pages of 50+ words; in a
    two-sentence Korean answer one repeated phrase ("바다 동물입니다" twice) is ordinary, so here the most frequent
    n-gram counts only from its third occurrence."""

    min_repeats = 3

    name = "👯 Gopher repetition (eojeol)"

    def __init__(self, cfg: KoreanFilterConfig):
        super().__init__(
            dup_line_frac=cfg.dup_line_frac, dup_para_frac=cfg.dup_para_frac,
            dup_line_char_frac=cfg.dup_line_char_frac, dup_para_char_frac=cfg.dup_para_char_frac, top_n_grams=(),
            dup_n_grams=tuple((int(n), f) for n, f in cfg.dup_n_grams), language=EojeolTokenizer())
        self.top_repeated = tuple((int(n), f) for n, f in cfg.top_n_grams)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        gopher = super().filter(doc)  # duplicate lines and paragraphs first: the more specific reason
        if gopher is not True:
            return gopher
        words = doc.text.split()
        for n, frac in self.top_repeated:
            counts = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
            if counts:
                gram, count = counts.most_common(1)[0]
                if count >= self.min_repeats and len(gram) * count / len(doc.text) > frac:
                    return False, f"top_{n}_gram"
        return True


def korean_filters(cfg: KoreanFilterConfig) -> list[BaseFilter]:
    return [KoreanFilter(cfg), KoreanRepetitionFilter(cfg)]

"""Checks on generated text: does a reply stop, does it repeat itself, does it loop. Pure functions, no model.

chatKoAlpaca.md shows the failure these catch: asked where Chicago O'Hare is, a model answers "시카고 오헤어
국제공항은 미국 일리노이주 시카고에 위치해 있습니다." and then says it again with small changes until the token
limit cuts it off mid-word. Two numbers describe that: the reply did not end with EOS (stop rate), and most of it
repeats what it already said (repeated n-gram rate, low distinct-n).

Units: words are whitespace-separated tokens (Korean eojeol), so numbers compare across models with different
tokenizers. Looping is judged on characters, because a reply can loop without spaces ("ㅋㅋㅋㅋ…").

Definitions (per reply):
- `repeated_ngram_rate(text, n)`: share of the reply's word n-grams that already occurred earlier in it
  (1 - unique/total; "seq-rep-n" of Welleck et al. 2019). 0 = no n-gram repeats; near 1 = one phrase over and over.
- `distinct_n(texts, n)`: unique word n-grams / all word n-grams (Li et al. 2016), of one reply or pooled over
  many (pooled, it also falls when different prompts get the same reply).
- `loop_score(text)`: share of the reply's character 10-grams that already occurred earlier in it; a reply with
  `loop_score >= 0.35` (and 40+ characters) is flagged as looping (`is_looping`, `LoopRule` says why 0.35).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

_WS = re.compile(r"\s+")


def words(text: str) -> list[str]:
    """Whitespace-separated words (eojeol for Korean)."""
    return text.split()


def ngrams(items: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def repeated_ngram_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier n-gram of the same text (0 when it has none)."""
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def repeated_char_ngram_rate(text: str, n: int = 10) -> float:
    """As `repeated_ngram_rate`, over character n-grams of the text with whitespace collapsed."""
    s = _WS.sub(" ", text).strip()
    grams = [s[i : i + n] for i in range(len(s) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(texts: str | Iterable[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams over `texts` (one text or many, pooled); None without n-grams."""
    if isinstance(texts, str):
        texts = [texts]
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


@dataclass(frozen=True)
class LoopRule:
    """When a reply counts as looping: long enough to tell, and much of it a repeat of itself.

    A reply loops when it has at least `min_chars` characters and at least `char_rate` of its character
    `char_n`-grams repeat an earlier one (`repeated_char_ngram_rate`). Characters rather than words, so that
    loops without spaces ("ㅋㅋㅋ…", "좋아요좋아요…") count, and so that a loop whose sentences vary a little (the
    O'Hare answer) still shows: its repeated 10-character pieces make up 38% of it.

    Set on real text: among 2,840 answers written by ChatGPT/GPT-4 that ship in data/samples (KoAlpaca outputs,
    KoChatGPT bot turns, VAIV chosen/rejected replies), and on those answers joined into 300-2,000 character
    texts, the 99th percentile is 0.17-0.26. The two single answers at 0.35 or more do repeat themselves (a truth
    table, a reply that restates one sentence about family members); an exact repeat of one sentence scores > 0.9.
    """

    min_chars: int = 40
    char_n: int = 10
    char_rate: float = 0.35


DEFAULT_LOOP_RULE = LoopRule()


def loop_score(text: str, rule: LoopRule = DEFAULT_LOOP_RULE) -> float:
    """The measure `is_looping` thresholds: share of repeated character n-grams."""
    return repeated_char_ngram_rate(text, rule.char_n)


def is_looping(text: str, rule: LoopRule = DEFAULT_LOOP_RULE) -> bool:
    """Whether `text` repeats itself enough to count as a loop (see `LoopRule`)."""
    if len(text.strip()) < rule.min_chars:
        return False
    return loop_score(text, rule) >= rule.char_rate


@dataclass(frozen=True)
class ReplyCheck:
    """The checks of one reply."""

    stopped: bool
    """Ended with EOS before the token limit."""
    n_tokens: int
    """Tokens generated (the model's own tokenizer; EOS not counted)."""
    n_chars: int
    repeated_4gram_rate: float
    """Share of word 4-grams that repeat an earlier one."""
    loop_score: float
    """Share of character n-grams (`LoopRule.char_n`) that repeat an earlier one; `looping` is this >= the rule's rate."""
    distinct_1: float | None
    distinct_2: float | None
    looping: bool

    def to_dict(self) -> dict:
        return asdict(self)


def check_reply(text: str, stopped: bool, n_tokens: int, rule: LoopRule = DEFAULT_LOOP_RULE) -> ReplyCheck:
    """All checks of one reply: `stopped` is whether generation ended with EOS, `n_tokens` how many it made."""
    return ReplyCheck(
        stopped=bool(stopped),
        n_tokens=int(n_tokens),
        n_chars=len(text),
        repeated_4gram_rate=repeated_ngram_rate(text, 4),
        loop_score=loop_score(text, rule),
        distinct_1=distinct_n(text, 1),
        distinct_2=distinct_n(text, 2),
        looping=is_looping(text, rule),
    )


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def summarize(texts: Sequence[str], checks: Sequence[ReplyCheck]) -> dict:
    """Totals over many replies: rates, means, and pooled distinct-1/2 (see the module docstring).

    Returns:
        {"n", "stop_rate", "loop_rate", "looping", "empty", "mean_tokens", "mean_chars",
         "mean_repeated_4gram_rate", "mean_loop_score", "distinct_1", "distinct_2"}; `looping`/`empty` are counts.
    """
    if len(texts) != len(checks):
        raise ValueError(f"summarize: {len(texts)} texts but {len(checks)} checks")
    n = len(checks)
    return {
        "n": n,
        "stop_rate": sum(c.stopped for c in checks) / n if n else None,
        "loop_rate": sum(c.looping for c in checks) / n if n else None,
        "looping": sum(c.looping for c in checks),
        "empty": sum(not t.strip() for t in texts),
        "mean_tokens": _mean(c.n_tokens for c in checks),
        "mean_chars": _mean(c.n_chars for c in checks),
        "mean_repeated_4gram_rate": _mean(c.repeated_4gram_rate for c in checks),
        "mean_loop_score": _mean(c.loop_score for c in checks),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
    }

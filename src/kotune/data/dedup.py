"""Near-duplicate instructions: ROUGE-L F on Korean characters, decided exactly as Alpaca decides, but fast.

The rule is Alpaca's (`generate_instruction.py`): a new instruction is compared with every instruction kept so
far (seed tasks included) and dropped when the **largest** ROUGE-L F-measure is **greater than** the threshold
(`if max(rouge_scores) > 0.7: continue`). An F equal to the threshold is kept. F is computed with rouge_score's
own float formula, so decisions match it item by item, rounding included: 7 shared characters of 10 + 10 give
0.7 (kept), but 7 of 9 + 11, also 14/20 on paper, give 0.7000000000000001 and are dropped by both.

Why characters. `rouge_score`'s default tokenizer keeps only `[a-z0-9]`: every Hangul instruction becomes zero
tokens, scores 0, and nothing Korean is ever deduplicated. Whitespace words do not work either: Korean attaches
particles and endings to the stem inside one eojeol (학교에/학교를, 설명하세요/설명해 주세요), so two
instructions that differ by a particle share almost no words; and Korean spacing is inconsistent between
writers (설명해주세요/설명해 주세요). Syllable characters are the smallest unit that keeps meaning and is
untouched by both. `normalize` therefore applies NFKC (precomposed syllables, half/full-width forms), lowercases
Latin letters as rouge_score does, and keeps one token per letter or digit (Hangul syllables and jamo, Latin,
CJK, digits); spaces and punctuation are dropped, as rouge_score drops them, so `설명해 주세요.` and
`설명해주세요?` are the same instruction.

Why it is fast and still exact. Alpaca computes an O(n·m) LCS table in Python for every pair, over a process
pool: N²/2 pairs, minutes at 2,000 and hours at 20,000. Here (1) a pair can only exceed the threshold when
F ≤ 2·min(n, m)/(n + m) allows it, so only kept texts in the length window (t·n/(2−t), n·(2−t)/t) are
compared; (2) rapidfuzz's bit-parallel C++ LCS is told the smallest LCS that could still matter
(`score_cutoff`) and skips the rest; (3) characters are renamed to code points below 256, most frequent first
(a bijection, so every LCS is unchanged), which keeps rapidfuzz on its fast lookup path for Hangul (4x here).
Every pair that survives these bounds is decided with rouge_score's float formula. No separate character-count
bound (LCS ≤ shared characters) is computed: per pair it would cost about what the bit-parallel LCS costs.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kotune.common.options import opt

# Bounds are computed with a threshold this much lower, so float rounding can never prune a pair whose F,
# computed as rouge_score computes it, is above the threshold (the bounds then only admit a few more pairs).
_SLACK = 1e-9
_MAX_BLOCK = 512


def normalize(text: str) -> str:
    """The characters ROUGE-L is computed on: NFKC, lowercase, letters and digits only (see module doc)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


class KoreanCharTokenizer:
    """One token per character `normalize` keeps, in the shape rouge_score expects:
    `RougeScorer(["rougeL"], tokenizer=KoreanCharTokenizer())`."""

    def tokenize(self, text: str) -> list[str]:
        return list(normalize(text))


def rouge_l_f(lcs: int, new_len: int, kept_len: int) -> float:
    """ROUGE-L F-measure exactly as `rouge_scorer._score_lcs(new_tokens, kept_tokens)` computes it in floats."""
    if not lcs or not new_len or not kept_len:
        return 0.0
    precision = lcs / kept_len
    recall = lcs / new_len
    return 2 * precision * recall / (precision + recall)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F of two texts on the characters `normalize` keeps."""
    from rapidfuzz.distance import LCSseq

    x, y = normalize(a), normalize(b)
    return rouge_l_f(LCSseq.similarity(x, y), len(x), len(y))


@dataclass(frozen=True)
class Match:
    """Why a text was dropped: the kept text it is most similar to, and that ROUGE-L F."""

    key: Hashable
    text: str
    score: float


def _length_window(n: int, t: float) -> tuple[int, int]:
    """Lengths m for which 2·min(n, m)/(n + m) can exceed t (t already lowered by _SLACK)."""
    return max(1, math.ceil(t * n / (2 - t))), math.floor(n * (2 - t) / t)


def _length_bands(encoded: list[str]) -> list[list[int]]:
    """Positions of the non-empty texts, grouped into bands of similar length (at most 1/8 apart).

    One rapidfuzz call per band instead of per length: each call converts its whole window of kept texts, and
    a band's window is only a little wider than that of each of its lengths.
    """
    order = sorted((i for i, s in enumerate(encoded) if s), key=lambda i: len(encoded[i]))
    bands: list[list[int]] = []
    for i in order:
        if bands and len(encoded[i]) <= len(encoded[bands[-1][0]]) * 9 // 8:
            bands[-1].append(i)
        else:
            bands.append([i])
    return bands


class DedupIndex:
    """The instructions kept so far; `offer` decides new ones in order and keeps those that are not duplicates.

    Args:
        threshold: drop a text when its largest ROUGE-L F with a kept text is greater than this (Alpaca: 0.7).
        workers: threads for rapidfuzz (-1: all cores).
    """

    def __init__(self, threshold: float = 0.7, *, workers: int = -1):
        if not 0 < threshold < 1:
            raise ValueError(f"threshold: must be between 0 and 1 (exclusive), got {threshold}")
        self.threshold, self.workers = threshold, workers
        self._codes: dict[str, str] = {}
        self._encoded: list[str] = []
        self._keys: list[Hashable] = []
        self._texts: list[str] = []
        self._by_len: dict[int, tuple[list[int], list[str]]] = {}  # length -> (ids, encoded texts)
        self._size = 0

    def __len__(self) -> int:
        """How many texts were kept (texts with no letters or digits count, though they can match nothing)."""
        return self._size

    def _encode_all(self, texts: Sequence[str]) -> list[str]:
        """Normalise and rename characters; new characters get the next codes, most frequent first."""
        norm = [normalize(t) for t in texts]
        new = Counter(ch for s in norm for ch in s if ch not in self._codes)
        for ch, _ in new.most_common():
            code = len(self._codes) + 1  # the 255 most frequent get 1..255: rapidfuzz's fast lookup path
            code = code if code < 0xD800 else code + 0x800  # never a surrogate
            self._codes[ch] = chr(code)
        codes = self._codes
        return ["".join(codes[ch] for ch in s) for s in norm]

    def _keep(self, encoded: str, key: Hashable, text: str) -> None:
        self._size += 1
        if not encoded:
            return  # rouge_score scores an empty token list 0 against everything: it can never match
        ids, strings = self._by_len.setdefault(len(encoded), ([], []))
        ids.append(len(self._encoded))
        strings.append(encoded)
        self._encoded.append(encoded)
        self._keys.append(key)
        self._texts.append(text)

    def add(self, texts: Iterable[str], keys: Iterable[Hashable] | None = None) -> None:
        """Keep `texts` without checking them (seed tasks, records already accepted)."""
        texts = list(texts)
        keys = list(keys) if keys is not None else list(range(self._size, self._size + len(texts)))
        for enc, key, text in zip(self._encode_all(texts), keys, texts):
            self._keep(enc, key, text)

    def offer(self, texts: Sequence[str], keys: Sequence[Hashable] | None = None) -> list[Match | None]:
        """Decide `texts` in order, each against everything kept before it (the index, then earlier `texts`).

        Returns:
            For each text: None when it was kept (and added to the index), else the `Match` with the kept text
            of largest ROUGE-L F, which is above the threshold.
        """
        keys = list(keys) if keys is not None else list(range(self._size, self._size + len(texts)))
        if len(keys) != len(texts):
            raise ValueError(f"offer: {len(texts)} texts but {len(keys)} keys")
        encoded = self._encode_all(texts)
        decisions: list[Match | None] = []
        while len(decisions) < len(texts):
            # Blocks grow with the index: each rapidfuzz call converts its whole length window, so a bigger block
            # spreads that cost over more texts; small at first so early texts see the index quickly.
            start = len(decisions)
            stop = start + max(64, min(_MAX_BLOCK, len(self._encoded) // 16))
            decisions.extend(self._offer_block(encoded[start:stop], keys[start:stop], texts[start:stop]))
        return decisions

    def _offer_block(self, encoded: list[str], keys: list[Hashable], texts: Sequence[str]) -> list[Match | None]:
        best = self._against_index(encoded)
        candidates = self._within_block(encoded)
        decisions: list[Match | None] = []
        kept_here: set[int] = set()  # positions in the block kept so far
        for i, (enc, key, text) in enumerate(zip(encoded, keys, texts)):
            match = best.get(i)
            for j, lcs in candidates.get(i, ()):
                if j in kept_here:
                    score = rouge_l_f(lcs, len(enc), len(encoded[j]))
                    if score > self.threshold and (match is None or score > match.score):
                        match = Match(keys[j], texts[j], score)
            decisions.append(match)
            if match is None:
                kept_here.add(i)
                self._keep(enc, key, text)
        return decisions

    def _against_index(self, encoded: list[str]) -> dict[int, Match]:
        """For each text of the block, its best match above the threshold among texts kept before the block."""
        from rapidfuzz import process
        from rapidfuzz.distance import LCSseq

        t = self.threshold - _SLACK
        best: dict[int, Match] = {}
        for band in _length_bands(encoded):
            a, b = len(encoded[band[0]]), len(encoded[band[-1]])
            lo, hi = _length_window(a, t)[0], _length_window(b, t)[1]
            ids, kept, counts = [], [], []
            for m in range(lo, hi + 1):
                m_ids, m_strings = self._by_len.get(m, ((), ()))
                ids.extend(m_ids)
                kept.extend(m_strings)
                counts.append(len(m_ids))
            if not ids:
                continue
            lengths = np.repeat(np.arange(lo, hi + 1, dtype=np.int64), counts)
            n = np.array([len(encoded[i]) for i in band], np.int64)
            # The smallest LCS any pair of the band needs; rapidfuzz returns 0 below it and may stop early.
            cutoff = max(1, math.floor(t * (a + lo) / 2))
            lcs = process.cdist([encoded[i] for i in band], kept, scorer=LCSseq.similarity,
                                score_cutoff=cutoff, dtype=np.int32, workers=self._workers_for(len(band) * len(ids)))
            hits = 2 * lcs >= t * (n[:, None] + lengths[None, :])
            for r, c in zip(*np.nonzero(hits)):
                score = rouge_l_f(int(lcs[r, c]), int(n[r]), int(lengths[c]))
                i, k = band[r], ids[c]
                if score > self.threshold and (i not in best or score > best[i].score):
                    best[i] = Match(self._keys[k], self._texts[k], score)
        return best

    def _workers_for(self, pairs: int) -> int:
        # Starting threads costs more than a small matrix takes on one core.
        return self.workers if pairs > 200_000 else 1

    def _within_block(self, encoded: list[str]) -> dict[int, list[tuple[int, int]]]:
        """Pairs (i, earlier j) inside the block that could be above the threshold, with their LCS."""
        from rapidfuzz import process
        from rapidfuzz.distance import LCSseq

        if len(encoded) < 2:
            return {}
        t = self.threshold - _SLACK
        lcs = process.cdist(encoded, encoded, scorer=LCSseq.similarity, dtype=np.int32,
                            workers=self._workers_for(len(encoded) ** 2))
        lengths = np.fromiter((len(s) for s in encoded), np.int64, len(encoded))
        hits = np.tril(2 * lcs >= t * (lengths[:, None] + lengths[None, :]), k=-1) & (lengths > 0)[:, None]
        pairs: dict[int, list[tuple[int, int]]] = {}
        for i, j in zip(*np.nonzero(hits)):
            pairs.setdefault(int(i), []).append((int(j), int(lcs[i, j])))
        return pairs


def dedup(texts: Sequence[str], threshold: float = 0.7, *, pool: Iterable[str] = (),
          workers: int = -1) -> list[Match | None]:
    """Alpaca's near-duplicate filter over `texts` in order, after keeping every text of `pool`.

    Returns:
        For each text: None if kept, else the Match that dropped it (key: index in `texts`, or ("pool", i)).
    """
    index = DedupIndex(threshold, workers=workers)
    pool = list(pool)
    index.add(pool, [("pool", i) for i in range(len(pool))])
    return index.offer(texts, list(range(len(texts))))


# ---------------------------------------------------------------------------- `kotune data dedup FILE`


def _instruction_of(fmt, rec) -> str:
    """The text compared for a record: Alpaca compares the instruction; for chats, the first user turn."""
    from kotune.data.formats import FieldError
    from kotune.data.schema import Conversation

    if not isinstance(rec.value, dict):
        raise FieldError("record", f"expected an object, got {type(rec.value).__name__}", "wrong_type")
    examples = fmt.convert(rec.value, rec.source)
    if not examples:
        raise FieldError("record", "holds no example", "empty")
    first = examples[0]
    messages = first.messages if isinstance(first, Conversation) else first.prompt
    return next(m.content for m in messages if m.role == "user")


def _default_out(path: str) -> Path:
    p = Path(path)
    suffix = p.suffix if p.suffix in (".json", ".jsonl") else ".jsonl"
    return p.with_name(f"{p.stem}.dedup{suffix}")


def _write(records: list[object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    else:
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


@dataclass
class DedupConfig:
    """`kotune data dedup FILE`."""

    file: str = opt(help="a data file in any format kotune reads (JSON, JSON Lines)")
    threshold: float = opt(0.7, "drop a record when its ROUGE-L F with a kept one is greater than this")
    out: str | None = opt(None, "where to write (default FILE.dedup.json or .jsonl, as FILE; a .json name writes a "
                                "JSON array)")

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold: a ROUGE-L F is between 0 and 1, got {self.threshold}")


def run(cfg: DedupConfig, echo=print, show: int = 50) -> int:
    """`kotune data dedup FILE`: drop near-duplicate records (file order), write the rest, report each pair.

    Writes OUT (default FILE.dedup.json/.jsonl; `.json` gives a JSON array, anything else JSON Lines) and
    OUT's `.dropped.jsonl` with one line per dropped record and the kept record that caused it (record numbers
    and lines of both). Records that cannot be converted are kept unchanged and listed (`kotune data check`
    explains them).

    Returns:
        Exit code 0.

    Raises:
        DataError: the file holds records that cannot be read (every one listed), so nothing is written.
    """
    from kotune.data.formats import FORMATS, FieldError, detect_format
    from kotune.data.records import read_records
    from kotune.data.schema import DataError, Problem

    path, threshold, out = cfg.file, cfg.threshold, cfg.out
    raw = read_records(path)
    if raw.layout == "text":
        raise ValueError(f"{path}: plain-text conversation logs cannot be rewritten; convert them to JSON Lines first")
    if raw.problems:
        raise DataError(raw.problems, f"`kotune data check {path}` lists them; fix them before deduplicating.")
    fmt = next((f for rec in raw.records if (f := detect_format(rec.value))), None)
    if fmt is None:
        raise DataError([Problem(path, raw.records[0].line, "format", f"cannot tell the format; known: {', '.join(FORMATS)}")])
    out_path = Path(out) if out else _default_out(path)
    if out_path.resolve() == Path(path).resolve():
        raise ValueError(f"--out: {out_path} is the input file; write to another file")

    # Records are keyed by their index in the file, never their line: a one-line JSON array has every record on
    # line 1, and a record shares its fate (and its report row) with no other.
    offered, texts, invalid = [], [], []
    for rec in raw.records:
        try:
            texts.append(_instruction_of(fmt, rec))
            offered.append(rec)
        except FieldError as e:
            invalid.append(Problem.at(rec.source, e.field, e.reason, e.kind))
    decisions = DedupIndex(threshold).offer(texts, [rec.index for rec in offered])
    by_index = {rec.index: rec for rec in raw.records}
    dropped = [(rec, text, m) for rec, text, m in zip(offered, texts, decisions) if m is not None]
    dropped_indices = {rec.index for rec, _, _ in dropped}
    kept = [rec.value for rec in raw.records if rec.index not in dropped_indices]
    _write(kept, out_path)
    report = out_path.with_name(f"{out_path.stem}.dropped.jsonl")
    # `record` is the 1-based number of the record in FILE (as printed), `line` where it starts.
    rows = [{"record": rec.index + 1, "line": rec.line, "instruction": text, "kept_record": m.key + 1,
             "kept_line": by_index[m.key].line, "kept_instruction": m.text, "rouge_l": round(m.score, 4)}
            for rec, text, m in dropped]
    _write(rows, report)

    echo(f"{path}: {len(raw.records):,} records ({fmt.name}); ROUGE-L F on characters > {threshold} is a duplicate")
    for (rec, text, m), row in list(zip(dropped, rows))[:show]:
        echo(f"{rec.source}: dropped {text[:60]!r} ~ line {by_index[m.key].source.location} "
             f"{m.text[:60]!r} (ROUGE-L {row['rouge_l']:.3f})")
    if len(rows) > show:
        echo(f"... and {len(rows) - show:,} more dropped pairs in {report}")
    for problem in invalid:
        echo(f"{problem} (kept unchecked)")
    echo(f"kept {len(kept):,}, dropped {len(rows):,} -> {out_path} (pairs: {report})")
    return 0

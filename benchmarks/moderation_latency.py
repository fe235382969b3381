"""Latency that `kotune serve --moderation words:FILE` adds to a request, against a plain `re` scan of the same
list measured in the same run.

    .venv/bin/python benchmarks/moderation_latency.py            # ~20 s
    .venv/bin/python benchmarks/moderation_latency.py --terms 2000

Data: real Korean user messages: the instructions (with their inputs) and the outputs of the shipped KoAlpaca
sample (a median of about 40 characters, the longest about 300: chat-sized turns). The word list is drawn from the same
text (seeded): `--terms` Hangul terms and a tenth as many English ones that occur nowhere in it, so nearly every
message is clean and is scanned against every term (the costly case), plus a few terms that do occur so some
messages are flagged, 10 regular expressions and 20 exceptions.

- kotune, check: `WordsCheck.check([message])`: NFKC + casefold, exceptions blanked, every category's terms.
- kotune, request: `Gate.decide` as a request meets it: the check in a worker thread, awaited by the event loop,
  counted; this is what a request waits for before the engine sees it.
- the same request path with a check that returns at once: the thread hop alone, so the check's own share shows.
- peer: one `re.compile("a|b|...")` of the same terms and patterns, searched in the raw message: no
  normalisation, no exceptions, no whole-word rule for English; the floor a word list can cost.

Per message, the median and 99th percentile over all messages (each timed alone, repeated `--rounds` times, the
fastest of the rounds kept). Exits 1 when the request's p99 is 1 ms or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from kotune.serve.config import ServeConfig  # noqa: E402
from kotune.serve.moderation import Verdict, WordsCheck  # noqa: E402
from kotune.serve.moderation_gate import Gate  # noqa: E402

TARGET_MS = 1.0


def messages() -> list[str]:
    records = json.loads((REPO / "data/samples/koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))
    texts = [(r["instruction"] + "\n" + r.get("input", "")).strip() for r in records] + [r["output"] for r in records]
    return [t for t in texts if t]


def word_list(texts: list[str], n: int, rng: random.Random) -> tuple[str, list[str], list[str]]:
    """(file text, terms, patterns): `n` Hangul terms absent from `texts`, n/10 English ones, 5 present ones."""
    corpus = "\n".join(texts)
    syllables = sorted({ch for ch in corpus if "\uac00" <= ch <= "\ud7a3"})
    absent: set[str] = set()
    while len(absent) < n:
        term = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 3))))
        if term not in corpus:
            absent.add(term)
    english = {"".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(n // 10)}
    present = rng.sample(sorted({w for w in corpus.split() if len(w) >= 4 and w.isalpha()}), 5)
    terms = sorted(absent) + sorted(english) + present
    patterns = [re.escape(a) + r"\s*" + re.escape(b) for a, b in zip(sorted(absent)[:10], sorted(absent)[10:20])]
    exceptions = [t + "다" for t in sorted(absent)[20:40]]
    lines = ["[bench]", *terms, *(f"re:{p}" for p in patterns), *(f"!{e}" for e in exceptions)]
    return "\n".join(lines) + "\n", terms, patterns


class NoCheck:
    name, categories = "none", []

    def check(self, texts: list[str]) -> list[Verdict]:
        return [Verdict(False) for _ in texts]


def timed(fn, texts: list[str], rounds: int) -> list[float]:
    """Fastest of `rounds` timings per text, in milliseconds."""
    best = [float("inf")] * len(texts)
    for _ in range(rounds):
        for i, text in enumerate(texts):
            start = time.perf_counter()
            fn(text)
            best[i] = min(best[i], time.perf_counter() - start)
    return [b * 1000 for b in best]


def timed_gate(gate: Gate, texts: list[str], rounds: int) -> list[float]:
    async def run() -> list[float]:
        best = [float("inf")] * len(texts)
        for _ in range(rounds):
            for i, text in enumerate(texts):
                start = time.perf_counter()
                await gate.decide([text], "bench")
                best[i] = min(best[i], time.perf_counter() - start)
        return [b * 1000 for b in best]

    return asyncio.run(run())


def summary(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--terms", type=int, default=500, help="Hangul terms in the list (plus a tenth in English)")
    parser.add_argument("--messages", type=int, default=1000, help="messages timed")
    parser.add_argument("--rounds", type=int, default=3, help="timings per message; the fastest is kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    texts = messages()
    rng.shuffle(texts)
    texts = texts[: args.messages]
    file_text, terms, patterns = word_list(texts, args.terms, rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "words.txt"
        path.write_text(file_text, encoding="utf-8")
        check = WordsCheck(path)
    plain = re.compile("|".join([*map(re.escape, terms), *patterns]))
    gate = Gate([check], ServeConfig(model="bench"))
    import logging

    logging.getLogger("kotune.serve.moderation").setLevel(logging.ERROR)  # one line per flagged message otherwise

    rows = [("kotune words: check", timed(lambda t: check.check([t]), texts, args.rounds)),
            ("kotune words: request (thread hop + decision)", timed_gate(gate, texts, args.rounds)),
            ("request with a check that does nothing (the hop alone)",
             timed_gate(Gate([NoCheck()], ServeConfig(model="bench")), texts, args.rounds)),
            ("plain re scan (peer)", timed(plain.search, texts, args.rounds))]
    flagged = sum(check.check([t])[0].flagged for t in texts)
    lengths = sorted(map(len, texts))
    print(f"{len(texts)} messages ({lengths[len(lengths) // 2]} characters median, {lengths[-1]} longest), "
          f"{len(terms)} terms + {len(patterns)} patterns + 20 exceptions; {flagged} flagged")
    print("| what | median ms | p99 ms | median / plain re |")
    print("| --- | ---: | ---: | ---: |")
    peer = summary(rows[-1][1])[0]
    for name, ms in rows:
        median, p99 = summary(ms)
        print(f"| {name} | {median:.3f} | {p99:.3f} | {median / peer:.1f}x |")
    request_p99 = summary(rows[1][1])[1]
    verdict = "met" if request_p99 < TARGET_MS else "MISSED"
    print(f"target: request p99 < {TARGET_MS} ms: {verdict} ({request_p99:.3f} ms)")
    return 0 if request_p99 < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())

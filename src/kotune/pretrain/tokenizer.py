"""`kotune tokenizer train`: a Korean byte-level BPE tokenizer from corpora, with a fit report."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from kotune.data.corpus import iter_documents
from kotune.models.tokenizer import split_held_out, tokenizer_stats, train_bpe_tokenizer
from kotune.pretrain.tokenizer_config import TokenizerConfig

HELD_OUT_EVERY = 100
HELD_OUT_LIMIT = 2000


def refined_documents(folder: Path) -> Iterator[str]:
    """The documents `kotune corpus` kept (OUTPUT_DIR/documents/*.jsonl.gz), in task order."""
    docs = folder / "documents" if (folder / "documents").is_dir() else folder
    files = sorted(docs.glob("*.jsonl.gz"))
    if not files:
        raise FileNotFoundError(f"corpus: {folder} holds no documents/*.jsonl.gz; name the output_dir of `kotune corpus`")
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def sample_documents(documents: Iterable[str], size: int, seed: int) -> list[str]:
    """A uniform sample of `size` documents in one pass (reservoir sampling, algorithm R), in corpus order."""
    rng, reservoir = random.Random(seed), []
    for i, doc in enumerate(documents):
        if i < size:
            reservoir.append((i, doc))
        elif (j := rng.randint(0, i)) < size:
            reservoir[j] = (i, doc)
    return [doc for _, doc in sorted(reservoir)]


def corpus_documents(cfg: TokenizerConfig) -> Iterable[str]:
    """Every document of the corpus files and `kotune corpus` folders, or the configured sample of them."""
    folders = [Path(p) for p in cfg.corpus if Path(p).is_dir()]
    files = [p for p in cfg.corpus if not Path(p).is_dir()]

    def stream() -> Iterator[str]:
        for folder in folders:
            yield from refined_documents(folder)
        if files:
            yield from iter_documents(files, text_field=cfg.text_field, unit=cfg.unit)

    return sample_documents(stream(), cfg.sample, cfg.seed) if cfg.sample else stream()


def run(cfg: TokenizerConfig, log=print) -> dict:
    """Train on every document but each 100th (held out, up to 2,000), save to `cfg.out`, and report fit.

    Returns:
        {"kotune": stats, "compare": stats or None} as also written to `out/tokenizer_report.json`.
    """
    from transformers import AutoTokenizer

    out, compare = cfg.out, cfg.compare
    held_out: list[str] = []
    docs = split_held_out(corpus_documents(cfg), HELD_OUT_EVERY, held_out, HELD_OUT_LIMIT)
    tokenizer = train_bpe_tokenizer(docs, vocab_size=cfg.vocab_size, style=cfg.style, extra_special_tokens=cfg.special_tokens)
    tokenizer.save_pretrained(out)
    if not held_out:
        raise ValueError(f"corpus: fewer than {HELD_OUT_EVERY} documents, so none could be held out for the report")
    report = {"held_out_documents": len(held_out), "kotune": tokenizer_stats(AutoTokenizer.from_pretrained(out), held_out)}
    report["compare"] = tokenizer_stats(AutoTokenizer.from_pretrained(compare), held_out) if compare else None
    (Path(out) / "tokenizer_report.json").write_text(json.dumps(report, indent=1))
    rows = [("kotune (" + out + ")", report["kotune"])] + ([("compare (" + compare + ")", report["compare"])] if compare else [])
    log(f"held-out slice: {len(held_out):,} documents")
    log(f"{'tokenizer':<40} {'vocab':>8} {'Korean chars/token':>19} {'byte fallback':>14}")
    for name, s in rows:
        log(f"{name:<40} {s['vocab_size']:>8,} {s['korean_chars_per_token']:>19.3f} {s['byte_fallback_rate']:>13.2%}")
    log(f"saved to {out}")
    return report

"""`kotune tokenizer train`: a Korean byte-level BPE tokenizer from corpora, with a fit report."""

from __future__ import annotations

import json
from pathlib import Path

from kotune.data.corpus import iter_documents
from kotune.models.tokenizer import split_held_out, tokenizer_stats, train_bpe_tokenizer
from kotune.pretrain.tokenizer_config import TokenizerConfig

HELD_OUT_EVERY = 100
HELD_OUT_LIMIT = 2000


def run(cfg: TokenizerConfig, log=print) -> dict:
    """Train on every document but each 100th (held out, up to 2,000), save to `cfg.out`, and report fit.

    Returns:
        {"kotune": stats, "compare": stats or None} as also written to `out/tokenizer_report.json`.
    """
    from transformers import AutoTokenizer

    out, compare = cfg.out, cfg.compare
    held_out: list[str] = []
    docs = iter_documents(cfg.corpus, text_field=cfg.text_field, unit=cfg.unit)
    docs = split_held_out(docs, HELD_OUT_EVERY, held_out, HELD_OUT_LIMIT)
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

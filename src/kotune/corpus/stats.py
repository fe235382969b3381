"""The statistics of a refining run, summed over the per-task stats datatrove leaves in each stage's logs
(every task's file, so a resumed run counts the tasks it skipped too)."""

from __future__ import annotations

import json
from pathlib import Path

# Steps are found by the names their classes carry (datatrove's, and ours in filters.py and pii.py).
STEPS = {"korean": "Korean quality", "repetition": "Gopher repetition", "exact": "exact-deduplication stage 3",
         "minhash": "MinHash stage 4", "pii": "Korean PII", "reader": "READER", "writer": "WRITER"}


def _total(value) -> float:
    return value["total"] if isinstance(value, dict) else value


def stage_stats(folder: Path) -> dict[str, dict[str, float]]:
    """{step name: {stat: sum over tasks}} of one stage's logs folder."""
    steps: dict[str, dict[str, float]] = {}
    for path in sorted((folder / "stats").glob("*.json")):
        for step in json.loads(path.read_text()):
            counts = steps.setdefault(step["name"], {})
            for key, value in step["stats"].items():
                counts[key] = counts.get(key, 0) + _total(value)
    return steps


def _step(stage: dict[str, dict[str, float]], key: str) -> dict[str, float] | None:
    return next((v for name, v in stage.items() if STEPS[key] in name), None)


def _filter_row(label: str, counts: dict[str, float] | None) -> dict | None:
    if counts is None:
        return None
    reasons = {k.removeprefix("dropped_"): int(v) for k, v in counts.items() if k.startswith("dropped_")}
    return {"step": label, "in": int(counts.get("total", 0)), "out": int(counts.get("forwarded", 0)),
            "removed": int(counts.get("dropped", 0)), "reasons": reasons}


def collect_stats(logs: Path, stages: list[str], tokens: dict | None) -> dict:
    """Documents in/out per filter, duplicates removed, PII masked, documents and tokens written."""
    by_stage = {name: stage_stats(logs / name) for name in stages}
    read = _step(by_stage["filter"], "reader") or {}
    rows = [_filter_row("Korean quality", _step(by_stage["filter"], "korean")),
            _filter_row("repetition (Gopher, eojeol)", _step(by_stage["filter"], "repetition")),
            _filter_row("exact duplicates", _step(by_stage["minhash_sigs"], "exact")),
            _filter_row("near duplicates (MinHash)", _step(by_stage["documents"], "minhash"))]
    pii = _step(by_stage["documents"], "pii") or {}
    written = _step(by_stage["documents"], "writer") or {}
    return {
        "documents_read": int(read.get("documents", 0)),
        "lines_skipped": {k: int(read[k]) for k in ("unreadable_json", "no_text") if read.get(k)},
        "steps": [row for row in rows if row],
        "pii_masked": {k.removeprefix("masked_"): int(v) for k, v in pii.items() if k.startswith("masked_")},
        "documents_with_pii": int(pii.get("documents_masked", 0)),
        "documents_written": int(written.get("total", 0)),
        "tokens": tokens and {k: tokens[k] for k in ("train_documents", "train_tokens", "eval_documents", "eval_tokens")},
    }


def print_stats(stats: dict, log=print) -> None:
    log(f"{'step':<30} {'in':>12} {'out':>12} {'removed':>10}  reasons")
    skipped = stats.get("lines_skipped") or {}
    reasons = ", ".join(f"{k} {v:,} (FILE:LINE in work/logs/filter/logs)" for k, v in skipped.items())
    log(f"{'read':<30} {'':>12} {stats['documents_read']:>12,} {sum(skipped.values()):>10,}  {reasons}".rstrip())
    for row in stats["steps"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(row["reasons"].items(), key=lambda kv: -kv[1]))
        log(f"{row['step']:<30} {row['in']:>12,} {row['out']:>12,} {row['removed']:>10,}  {reasons}")
    masked = ", ".join(f"{k} {v:,}" for k, v in stats["pii_masked"].items()) or "none"
    log(f"PII masked: {masked} (in {stats['documents_with_pii']:,} documents)")
    log(f"documents written: {stats['documents_written']:,}")
    if stats["tokens"]:
        t = stats["tokens"]
        log(f"tokens written: {t['train_tokens']:,} train ({t['train_documents']:,} documents), "
            f"{t['eval_tokens']:,} held out ({t['eval_documents']:,} documents)")

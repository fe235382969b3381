"""`kotune corpus` throughput: tokens/s of the whole refine + tokenize run with 1 and 2 local workers, against
`datasets.map(batched=True, num_proc=2)` tokenizing the same documents with the same tokenizer, in one run.

    .venv/bin/python benchmarks/corpus_throughput.py            # 120,000 documents, a few minutes on 2 cores
    .venv/bin/python benchmarks/corpus_throughput.py --quick    # 20,000 documents

The documents are distinct Korean paragraphs: 3-6 sentences drawn (seeded) from the KoAlpaca answers shipped in
data/samples/, so the filters and the deduplication do real work but keep most of them. Tokens/s counts the
tokens of every input document (as datasets tokenizes them all), over the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = 4


def make_corpus(folder: Path, documents: int, seed: int = 0) -> list[str]:
    answers = json.loads((REPO / "data/samples/koalpaca_v1.0.sample.json").read_text(encoding="utf-8"))
    sentences = [s for a in answers for s in re.split(r"(?<=[.?!])\s+", a["output"].strip()) if len(s) > 15]
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(sentences, rng.randint(3, 6))) for _ in range(documents)]
    folder.mkdir(parents=True)
    for i in range(FILES):
        with (folder / f"part-{i}.jsonl").open("w", encoding="utf-8") as f:
            for text in texts[i::FILES]:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return texts


def run_corpus(folder: Path, tokenizer: Path, out: Path, workers: int) -> tuple[float, dict]:
    from kotune.config import from_dict
    from kotune.corpus.config import CorpusRecipe
    from kotune.corpus.run import run

    cfg = from_dict(CorpusRecipe, {"output_dir": str(out), "input": {"path": str(folder), "format": "jsonl"},
                                   "tokenizer": str(tokenizer), "executor": {"workers": workers}})
    start = time.perf_counter()
    run(cfg, log=lambda *_: None)
    return time.perf_counter() - start, json.loads((out / "stats.json").read_text())


def run_datasets(folder: Path, tokenizer: Path) -> tuple[float, int]:
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    datasets.disable_caching()
    start = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=sorted(map(str, folder.glob("*.jsonl"))), split="train")
    ds = ds.map(lambda b: tok(b["text"], add_special_tokens=False), batched=True, num_proc=2, remove_columns=["text"])
    tokens = sum(len(ids) + 1 for ids in ds["input_ids"])  # + EOS, as the corpus token files hold
    return time.perf_counter() - start, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=120_000)
    parser.add_argument("--quick", action="store_true", help="20,000 documents")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kotune.models.tiny import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    try:
        tokenizer = build_tiny_model(root / "tiny", arch="gpt-neox", vocab_size=4000)
        make_corpus(root / "in", 20_000 if args.quick else args.documents)
        d_time, tokens = run_datasets(root / "in", tokenizer)
        rows = [("datasets.map(batched, num_proc=2), tokenize only", d_time, None)]
        for workers in (1, 2):
            seconds, stats = run_corpus(root / "in", tokenizer, root / f"out{workers}", workers)
            rows.append((f"kotune corpus, {workers} worker(s): refine + dedup + tokenize", seconds, stats))
        base = {name: tokens / s for name, s, _ in rows}
        one = base[rows[1][0]]
        print(f"documents: {stats['documents_read']:,} read, {stats['documents_written']:,} kept; "
              f"input tokens: {tokens:,}")
        print(f"| run | seconds | input tokens/s | / datasets | / kotune 1 worker | tokenize stage, s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, s, st in rows:
            tok_stage = f"{st['stage_seconds']['tokenize']:.1f}" if st else ""
            print(f"| {name} | {s:.1f} | {tokens / s:,.0f} | {tokens / s / base[rows[0][0]]:.2f}x | "
                  f"{tokens / s / one:.2f}x | {tok_stage} |")
        for name, _, st in rows[1:]:
            print(f"{name}: stage seconds {st['stage_seconds']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

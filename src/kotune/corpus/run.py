"""`kotune corpus RECIPE`: the datatrove stages of a refining run, the merge of their token files, the statistics.

Stages (each a datatrove executor with its own logs and completion markers under work/logs/STAGE, so a rerun
skips finished tasks and redoes a killed one from its start; a task rewrites its whole output file):
  filter          read -> Korean filters -> work/filtered -> exact-dedup signatures
  exact_find      duplicate texts across all tasks (one task)
  minhash_sigs    work/filtered -> drop exact duplicates -> work/unique -> MinHash signatures
  minhash_buckets candidate pairs per LSH band (one task per band)
  minhash_cluster near-duplicate clusters; all but one document of each is removed (one task)
  documents       work/unique -> drop near-duplicates -> mask PII -> documents/
  tokenize        documents/ -> work/tokens (kotune token files per task), then merged into tokens/
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from kotune.config import save_config
from kotune.corpus.config import CorpusRecipe

WORK = "work"
DOCUMENTS = "documents"
TOKENS = "tokens"
STATS_JSON = "stats.json"


def _executor(cfg: CorpusRecipe, name: str, pipeline: list, tasks: int, out: Path, depends=None):
    """One stage on the configured executor; `depends` chains Slurm jobs (local and Ray stages run in turn)."""
    e, logs = cfg.executor, str(out / WORK / "logs" / name)
    workers = min(e.workers, tasks)
    if e.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = e.slurm
        return SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers, time=s.time, partition=s.partition,
                                     cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos,
                                     venv_path=s.venv_path, sbatch_args=s.sbatch_args or None, logging_dir=logs,
                                     job_name=f"kotune-corpus-{name}", depends=depends)
    if e.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs,
                                   cpus_per_task=e.ray.cpus_per_task, mem_per_cpu_gb=e.ray.mem_per_cpu_gb)
    from datatrove.executor import LocalPipelineExecutor

    return LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs)


def _reader(cfg: CorpusRecipe):
    from datatrove.pipeline.readers import ParquetReader

    from kotune.corpus.steps import CheckedJsonlReader, TxtReader

    i = cfg.input
    common = dict(glob_pattern=i.glob, limit=i.limit)
    if i.format == "txt":
        return TxtReader(i.path, unit=i.unit, **common)
    if i.format == "parquet":
        return ParquetReader(i.path, text_key=i.text_field, **common)
    return CheckedJsonlReader(i.path, text_key=i.text_field, **common)


def task_count(cfg: CorpusRecipe) -> int:
    """executor.tasks, else one task per input file: what a task keeps of a duplicate group depends on how the
    input is sharded, so the shards never follow the number of workers (1 or 2 workers: the same output)."""
    if cfg.executor.tasks:
        return cfg.executor.tasks
    from datatrove.io import get_datafolder

    files = get_datafolder(cfg.input.path).list_files(recursive=True, glob_pattern=cfg.input.glob)
    if not files:
        raise FileNotFoundError(f"input.path: no files in {cfg.input.path}" + (f" matching {cfg.input.glob}"
                                                                               if cfg.input.glob else ""))
    return len(files)


def tokenizer_files(folder: str) -> tuple[str, int, str]:
    """(tokenizer.json path, EOS id, vocabulary fingerprint) of a saved fast tokenizer."""
    from transformers import AutoTokenizer

    from kotune.data.token_blocks import vocab_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(folder)
    path = Path(folder) / "tokenizer.json"
    if not path.is_file() or tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer: {folder} needs a tokenizer.json (a fast tokenizer) and an EOS token")
    return str(path), tokenizer.eos_token_id, vocab_fingerprint(tokenizer)


def build_stages(cfg: CorpusRecipe, out: Path, eos_and_file: tuple[str, int] | None) -> list[tuple[str, object]]:
    """The (name, executor) list of this recipe, in run order."""
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.exact_dedup import (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature,
                                                      ExactFindDedups)
    from datatrove.pipeline.writers import JsonlWriter

    from kotune.corpus.filters import korean_filters
    from kotune.corpus.pii import KoreanPiiMasker
    from kotune.corpus.steps import (CharacterMinhashSignature, CharacterShingles, TaskFileReader, TokenFileWriter,
                                     document_text, hash_config, minhash_config)

    work, d, tasks = out / WORK, cfg.dedup, task_count(cfg)
    exact = ExactDedupConfig(content_getter=document_text, hash_config=hash_config())
    minhash = minhash_config(d)
    plan = [("filter", [_reader(cfg), *korean_filters(cfg.filters), JsonlWriter(str(work / "filtered")),
                        *([ExactDedupSignature(str(work / "exact/sigs"), config=exact)] if d.exact else [])], tasks)]
    if d.exact:
        plan.append(("exact_find", [ExactFindDedups(str(work / "exact/sigs"), str(work / "exact/dups"), config=exact)], 1))
    plan.append(("minhash_sigs", [TaskFileReader(str(work / "filtered")),
                                  *([ExactDedupFilter(str(work / "exact/dups"), config=exact)] if d.exact else []),
                                  JsonlWriter(str(work / "unique")),
                                  *([CharacterMinhashSignature(str(work / "minhash/sigs"), config=minhash,
                                                               language=CharacterShingles())] if d.minhash else [])],
                  tasks))
    if d.minhash:
        plan.append(("minhash_buckets", [MinhashDedupBuckets(str(work / "minhash/sigs"), str(work / "minhash/buckets"), config=
                                                             minhash)], d.num_buckets))
        plan.append(("minhash_cluster", [MinhashDedupCluster(str(work / "minhash/buckets"),
                                                             str(work / "minhash/remove"), config=minhash)], 1))
    plan.append(("documents", [TaskFileReader(str(work / "unique")),
                               *([MinhashDedupFilter(str(work / "minhash/remove"))] if d.minhash else []),
                               KoreanPiiMasker(cfg.pii), JsonlWriter(str(out / DOCUMENTS))], tasks))
    if eos_and_file:
        tokenizer_json, eos = eos_and_file
        plan.append(("tokenize", [TaskFileReader(str(out / DOCUMENTS)),
                                  TokenFileWriter(str(work / "tokens"), tokenizer_json, eos, cfg.eval_fraction)], tasks))
    stages, previous = [], None
    for name, pipeline, n in plan:
        previous = _executor(cfg, name, pipeline, n, out, depends=previous)
        stages.append((name, previous))
    return stages


def merge_tokens(work_tokens: Path, folder: Path, tasks: int, meta: dict) -> dict:
    """Concatenate the per-task token files in task order into tokens/{train,eval}.bin, documents.jsonl and
    tokens.json (the layout `kotune pretrain` reads with data.tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"train_documents": 0, "eval_documents": 0, "train_tokens": 0, "eval_tokens": 0}
    for name in ("train.bin", "eval.bin", "documents.jsonl"):
        with (folder / f"{name}.tmp").open("wb") as merged:
            for rank in range(tasks):
                part = work_tokens / f"{rank:05d}.{name}"
                if part.is_file():
                    with part.open("rb") as f:
                        shutil.copyfileobj(f, merged, 1 << 24)
        (folder / f"{name}.tmp").replace(folder / name)
    with (folder / "documents.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            counts[f"{row['split']}_documents"] += 1
            counts[f"{row['split']}_tokens"] += row["tokens"]
    info = {**meta, "dtype": "uint32", **counts}
    (folder / "tokens.json").write_text(json.dumps(info, ensure_ascii=False, indent=1))
    return info


def run(cfg: CorpusRecipe, log=print) -> Path:
    """Run (or resume) every stage, merge the token files and write stats.json; returns output_dir.

    With executor.kind slurm the stages are submitted as dependent job arrays and this returns at once; run the
    same command again once they finish to merge the token files and write the statistics.
    """
    from kotune.corpus.stats import collect_stats, print_stats

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tokenizer = tokenizer_files(cfg.tokenizer) if cfg.tokenizer else None
    stages = build_stages(cfg, out, tokenizer[:2] if tokenizer else None)
    seconds = {}
    for name, executor in stages:
        log(f"stage {name}: {executor.world_size} task(s)")
        start = time.perf_counter()
        if cfg.executor.kind != "slurm" or name == stages[-1][0]:  # a Slurm chain is submitted from its last job
            executor.run()
        seconds[name] = round(time.perf_counter() - start, 3)
    unfinished = [name for name, executor in stages if executor.get_incomplete_ranks(skip_completed=True)]
    if unfinished:
        log(f"submitted; stages not finished yet: {', '.join(unfinished)}. Run the same command again when they "
            f"are done to merge the token files and write {STATS_JSON}.")
        return out
    tasks = task_count(cfg)
    tokens = None
    if tokenizer:
        tokens = merge_tokens(out / WORK / "tokens", out / TOKENS, tasks,
                              {"tokenizer": cfg.tokenizer, "vocab": tokenizer[2], "eos_token_id": tokenizer[1],
                               "eval_fraction": cfg.eval_fraction, "source": "kotune corpus"})
    stats = collect_stats(out / WORK / "logs", [name for name, _ in stages], tokens)
    stats["stage_seconds"] = seconds  # of this invocation: a stage skipped as finished takes ~0 s
    stats["recipe"] = asdict(cfg)
    (out / STATS_JSON).write_text(json.dumps(stats, ensure_ascii=False, indent=1))
    print_stats(stats, log)
    log(f"documents: {out / DOCUMENTS}" + (f"; token files for `kotune pretrain` (data.tokens): {out / TOKENS}"
                                           if tokens else "; set `tokenizer` to write token files"))
    return out

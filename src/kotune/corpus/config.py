"""The recipe of `kotune corpus`: input, Korean filters, deduplication, PII masking, tokenization, executor.

The filter defaults were measured on the shipped Korean text (data/samples/, ../shared/data/); see README
"Refining a corpus" and tests/unit/corpus/test_filters.py, which checks that clean samples pass them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt


@dataclass
class InputConfig:
    path: str = opt(help="folder holding the input files: local, or any fsspec URL (s3://, gs://, hf://datasets/...)")
    format: Literal["txt", "jsonl", "parquet"] = opt("jsonl", "file format; .gz/.zst compression is read as such")
    glob: str | None = opt(None, "only files matching this pattern, relative to path (e.g. '*.txt', '**/*.jsonl.gz')")
    text_field: str = opt("text", "jsonl/parquet: the field holding the document text")
    unit: Literal["line", "paragraph"] = opt("line", "txt: one document per line, or per blank-line paragraph")
    limit: int = opt(-1, "read at most this many documents per task (-1: all); for trial runs")


@dataclass
class KoreanFilterConfig:
    """Thresholds of the Korean quality filters; a null threshold switches that check off."""

    min_hangul_share: float | None = opt(0.5, "least share of Hangul among letters, URLs left out (below 0.5: 5.7% of "
                                                    "KoAlpaca answers, code and English ones)")
    min_chars: int | None = opt(10, "fewest characters without whitespace")
    max_chars: int | None = opt(100_000, "most characters without whitespace (a 100k-character page is rarely prose)")
    min_eojeol: int | None = opt(3, "fewest eojeol (space-separated units)")
    max_eojeol: int | None = opt(50_000, "most eojeol")
    max_symbol_ratio: float | None = opt(0.1, "most share of symbol characters (not letters, digits, spaces or "
                                              "ordinary punctuation) among non-space characters")
    max_url_ratio: float | None = opt(0.2, "most share of characters inside URLs")
    min_sentence_end_share: float | None = opt(0.5, "least share of lines ending like a Korean sentence (다/요/죠/까"
                                                    "... or . ? !); menus and link lists end in nouns")
    dup_line_frac: float | None = opt(0.3, "Gopher: most share of lines repeating an earlier line")
    dup_para_frac: float | None = opt(0.3, "Gopher: most share of paragraphs repeating an earlier one")
    dup_line_char_frac: float | None = opt(0.2, "Gopher: most share of characters in repeated lines")
    dup_para_char_frac: float | None = opt(0.2, "Gopher: most share of characters in repeated paragraphs")
    top_n_grams: list[list[float]] = opt([[2, 0.2], [3, 0.18], [4, 0.16]],
                                         "Gopher: [n, most share of characters in the most frequent eojeol n-gram]")
    dup_n_grams: list[list[float]] = opt([[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]],
                                         "Gopher: [n, most share of characters in repeated eojeol n-grams]")


@dataclass
class DedupConfig:
    exact: bool = opt(True, "drop documents whose text repeats an earlier one exactly (datatrove exact dedup)")
    minhash: bool = opt(True, "drop near-duplicates (datatrove MinHash LSH over character n-grams)")
    char_ngrams: int = opt(3, "syllables (characters) per shingle; spaces are removed first, so spacing changes do "
                              "not count. 3: distinct KoAlpaca answers share at most 0.11 of their shingles, four "
                              "particles changed keep 0.86 (10th percentile), one sentence in five rewritten 0.7")
    num_buckets: int = opt(14, "LSH bands. With 5 hashes per band a pair at Jaccard 0.7 is found with p=0.92, "
                               "at 0.8 with p=0.996, at 0.3 with p=0.03")
    hashes_per_bucket: int = opt(5, "hashes per band")
    seed: int = opt(1, "seed of the MinHash permutations (the same on every worker)")


@dataclass
class PiiConfig:
    resident_number: bool = opt(True, "resident registration numbers (YYMMDD-NNNNNNN) -> <주민번호>")
    phone: bool = opt(True, "Korean mobile and landline numbers -> <전화번호>")
    email: bool = opt(True, "e-mail addresses -> <이메일>")


@dataclass
class SlurmConfig:
    partition: str = opt("", "Slurm partition (required with kind: slurm)")
    time: str = opt("24:00:00", "time limit per task")
    cpus_per_task: int = opt(1, "CPUs per task")
    mem_per_cpu_gb: int = opt(2, "memory per CPU")
    qos: str = opt("normal", "quality of service")
    venv_path: str | None = opt(None, "virtual environment to activate on the nodes")
    sbatch_args: dict = opt({}, "extra #SBATCH options, e.g. {account: my-account}")


@dataclass
class RayConfig:
    cpus_per_task: int = opt(1, "CPUs per task")
    mem_per_cpu_gb: float = opt(2.0, "memory per CPU")


@dataclass
class ExecutorConfig:
    kind: Literal["local", "slurm", "ray"] = opt("local", "where tasks run: local processes, a Slurm array, a Ray cluster")
    workers: int = opt(1, "tasks running at once (local: processes)")
    tasks: int | None = opt(None, "shards of the input (a task reads whole files); unset: one per input file. "
                                  "Which copy of a duplicate survives depends on the shards, never on workers")
    slurm: SlurmConfig = opt(SlurmConfig(), "kind: slurm options (datatrove SlurmPipelineExecutor)")
    ray: RayConfig = opt(RayConfig(), "kind: ray options (datatrove RayPipelineExecutor; run inside `ray start`)")

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("executor.workers: must be at least 1")
        if self.tasks is not None and self.tasks < 1:
            raise ValueError("executor.tasks: must be at least 1")
        if self.kind == "slurm" and not self.slurm.partition:
            raise ValueError("executor.slurm.partition: required with executor.kind: slurm")


@dataclass
class CorpusRecipe:
    """`kotune corpus RECIPE`: read -> Korean filters -> exact and MinHash dedup -> PII masking -> token files.

    Outputs under output_dir: documents/ (refined documents, jsonl.gz, one file per task), tokens/ (train.bin,
    eval.bin, tokens.json, documents.jsonl: what `kotune pretrain` reads with `data.tokens`), stats.json,
    work/ (intermediate files and datatrove logs; a rerun resumes from them).
    """

    output_dir: str = opt(help="folder for documents/, tokens/, stats.json and work/")
    input: InputConfig = opt(help="what to read")
    tokenizer: str | None = opt(None, "tokenizer folder (from `kotune tokenizer train` or a model); unset: stop after "
                                      "documents/ (to train a tokenizer on them first)")
    eval_fraction: float = opt(0.01, "documents held out for pre-training perplexity (chosen by document id)")
    filters: KoreanFilterConfig = opt(KoreanFilterConfig(), "Korean quality filters")
    dedup: DedupConfig = opt(DedupConfig(), "duplicate removal")
    pii: PiiConfig = opt(PiiConfig(), "personal data masked in the kept documents")
    executor: ExecutorConfig = opt(ExecutorConfig(), "local, slurm or ray")

    def __post_init__(self) -> None:
        if not self.input.path:
            raise ValueError("input.path: name the folder (or fsspec URL) holding the input files")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be in [0, 1)")
        if self.dedup.char_ngrams < 1:
            raise ValueError("dedup.char_ngrams: must be at least 1")

"""The options of `kotune tokenizer train`, and the pipeline's `tokenizer` section (the same, less `out`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt


@dataclass
class TokenizerSection:
    """The pipeline's `tokenizer` section: a Korean tokenizer for pre-training (saved to `run_dir/tokenizer`)."""

    corpus: list[str] = opt(help=".txt (a document per line), .jsonl (text field) or any data format kotune reads, "
                                 "or the output_dir of `kotune corpus` (its refined documents/)")
    vocab_size: int = opt(4000, "vocabulary size")
    style: Literal["gpt-neox", "llama"] = opt("gpt-neox", "special tokens and BOS handling")
    special_tokens: list[str] = opt([], "extra tokens never split (e.g. chat markers)")
    compare: str | None = opt(None, "another tokenizer (folder or hub id) measured on the same held-out slice")
    text_field: str = opt("text", "JSONL field holding the text")
    unit: Literal["line", "paragraph"] = opt("line", "plain text: document per line or paragraph")
    sample: int | None = opt(None, "train on a seeded uniform sample of this many documents (streamed reservoir "
                                   "sampling: memory holds the sample only); unset: every document")
    seed: int = opt(0, "seed of the sample")

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ValueError("corpus: name at least one file")
        if self.sample is not None and self.sample < 1:
            raise ValueError("sample: must be at least 1 (or unset for every document)")


@dataclass(kw_only=True)  # a required field after the section's defaulted ones
class TokenizerConfig(TokenizerSection):
    """`kotune tokenizer train CORPUS... --out DIR`."""

    out: str = opt(help="folder to save the tokenizer and tokenizer_report.json in", cli="flag")

"""The pre-training recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt
from kotune.training.config import StageConfig, TrainConfig


@dataclass
class ModelInitConfig:
    """A model built from a config with random weights (ChatBaker-style pre-training from scratch)."""

    arch: Literal["llama", "gpt-neox"] = opt("llama", "architecture")
    hidden_size: int = opt(2048, "hidden size (ChatBaker 1.3B: 2048)")
    num_hidden_layers: int = opt(24, "layers (ChatBaker 1.3B: 24)")
    num_attention_heads: int = opt(32, "attention heads (ChatBaker 1.3B: 32)")
    num_key_value_heads: int | None = opt(None, "LLaMA grouped-query heads; unset: same as attention heads")
    intermediate_size: int | None = opt(None, "MLP width; unset: LLaMA 8/3 x hidden rounded to 256, GPT-NeoX 4 x hidden")
    max_position_embeddings: int = opt(2048, "longest sequence (ChatBaker: 2048)")
    tie_word_embeddings: bool = opt(False, "share input and output embeddings")


@dataclass
class CorpusConfig:
    files: list[str] = opt([], "raw-text corpora: .txt, .jsonl with a text field, or any data format kotune reads")
    tokens: str | None = opt(None, "token files written by `kotune corpus` (its tokens/ folder), read as they are: "
                                   "no tokenizing, and its own held-out split (eval_fraction of the corpus recipe); "
                                   "instead of `files`")
    text_field: str = opt("text", "JSONL field holding the text")
    unit: Literal["line", "paragraph"] = opt("line", "plain text: one document per line, or per blank-line paragraph")
    block_size: int = opt(2048, "tokens per training block; documents are joined with EOS and packed")
    eval_fraction: float = opt(0.01, "documents held out for perplexity (a fixed pseudo-random choice)")
    eval_max_blocks: int = opt(200, "at most this many held-out blocks are scored")

    def __post_init__(self) -> None:
        if not 0 < self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be between 0 and 1")
        if self.block_size < 8:
            raise ValueError("block_size: must be at least 8")


@dataclass(kw_only=True)
class PretrainConfig(StageConfig):
    """Causal-LM pre-training on raw text, from scratch (`init`) or continued from a checkpoint (`model`).
    Beside the model it writes tokens/ (the tokenized corpus) and eval.json (held-out perplexity)."""

    model: str | None = opt(None, "continue pre-training this model (hub id or folder); unset: build from `init`")
    init: ModelInitConfig = opt(ModelInitConfig(), "architecture for a model trained from scratch")
    data: CorpusConfig = opt(CorpusConfig(), "the corpus")
    train: TrainConfig = opt(TrainConfig(learning_rate=3e-4, epochs=1.0, global_batch_size=64, micro_batch_size=8,
                                         warmup_ratio=0.01, weight_decay=0.1), "optimisation")

    def __post_init__(self) -> None:
        if not self.data.files and not self.data.tokens:
            raise ValueError("data.files: at least one corpus file is needed (or data.tokens from `kotune corpus`)")
        if self.data.files and self.data.tokens:
            raise ValueError("data.tokens: set either data.files (tokenized here) or data.tokens, not both")
        if self.model is None and self.tokenizer is None:
            raise ValueError("tokenizer: a model built from `init` needs a tokenizer (train one with `kotune tokenizer train`)")

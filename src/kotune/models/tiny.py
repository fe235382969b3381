"""Tiny models with a Korean byte-level BPE tokenizer, built locally: for tests and the quickstart.

No download: the tokenizer is trained on Korean text shipped with kotune (or any text given), and the model
is randomly initialised from a small config of the chosen architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from kotune.common.options import opt
from kotune.data.corpus import iter_documents
from kotune.models.tokenizer import train_bpe_tokenizer
from kotune.resources import resource_path

# Package data (copies of three data/samples files), so a wheel install builds the same tokenizer as a checkout.
DEFAULT_CORPUS = [
    resource_path("corpus", name)
    for name in ("koalpaca_v1.0.sample.json", "kochatgpt_conversation.sample.txt", "kochatgpt_ppo_prompts.sample.json")
]


def tiny_config(arch: str, tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 2048):
    from transformers import GPTNeoXConfig, LlamaConfig

    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * hidden, max_position_embeddings=max_positions,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    if arch == "gpt-neox":
        return GPTNeoXConfig(rotary_pct=0.5, use_parallel_residual=True, **common)
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=heads, **common)
    raise ValueError(f"arch: unknown architecture {arch!r}; choose gpt-neox or llama")


@dataclass
class TinyConfig:
    """`kotune model tiny --out DIR`: a tiny random model and its Korean tokenizer."""

    out: str = opt(help="folder to save the model and tokenizer in", cli="flag")
    arch: Literal["gpt-neox", "llama"] = opt("gpt-neox", "architecture")
    corpus: list[str] = opt([], "text/data files for the tokenizer (default: shipped Korean samples)")
    vocab_size: int = opt(4000, "tokenizer vocabulary size")
    hidden: int = opt(64, "hidden size")
    layers: int = opt(2, "layers")
    heads: int = opt(4, "attention heads")
    seed: int = opt(0, "seed of the random weights")


def build_tiny_model(out_dir: str | Path, **options) -> Path:
    """Train a tokenizer on `corpus` (the shipped Korean samples by default), build a random tiny model and
    save both (safetensors) to `out_dir`; `options` are `TinyConfig`'s fields."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = TinyConfig(out=str(out_dir), **options)
    tokenizer = train_bpe_tokenizer(iter_documents(cfg.corpus or DEFAULT_CORPUS), vocab_size=cfg.vocab_size,
                                    style=cfg.arch)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(tiny_config(cfg.arch, tokenizer, hidden=cfg.hidden, layers=cfg.layers,
                                                         heads=cfg.heads))
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def run(cfg: TinyConfig) -> None:
    """`kotune model tiny`."""
    options = {k: v for k, v in asdict(cfg).items() if k != "out"}
    print(f"saved tiny {cfg.arch} model and tokenizer to {build_tiny_model(cfg.out, **options)}")

"""Tiny models with a Korean byte-level BPE tokenizer, built locally: for tests and the quickstart.

No download: the tokenizer is trained on Korean text shipped with kotune (or any text given), and the model
is randomly initialised from a small config of the chosen architecture.
"""

from __future__ import annotations

from pathlib import Path

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

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if arch == "gpt-neox":
        return GPTNeoXConfig(rotary_pct=0.5, use_parallel_residual=True, **common)
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=heads, **common)
    raise ValueError(f"arch: unknown architecture {arch!r}; choose gpt-neox or llama")


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "gpt-neox",
    corpus: list[str | Path] | None = None,
    vocab_size: int = 4000,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `corpus` (the shipped Korean samples by default), build a random tiny model and
    save both (safetensors) to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = train_bpe_tokenizer(iter_documents(corpus or DEFAULT_CORPUS), vocab_size=vocab_size, style=arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, hidden=hidden, layers=layers, heads=heads))
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out

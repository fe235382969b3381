"""A polyglot-ko-1.3b-shaped model with random weights, saved like the real one: for the `realsize` smoke test.

The shapes are those of EleutherAI/polyglot-ko-1.3b's config.json (1.33B parameters); the weights are stored in
fp16 as on the hub, so loading goes through the same fp16 -> compute-dtype path a user's first run takes. The
tokenizer is kotune's BPE trained on the shipped corpus: it has fewer tokens (~28.7k) than the embedding's 30,080
rows, as the real tokenizer (30,003) has, so no resize is needed and every shape stays true.

Run as a script (`python shape_true.py OUT`) so the 5 GB of building stays out of the test process.
"""

from __future__ import annotations

import sys
from pathlib import Path

# EleutherAI/polyglot-ko-1.3b config.json
POLYGLOT_KO_1_3B = dict(
    vocab_size=30080,
    hidden_size=2048,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=8192,
    rotary_pct=0.5,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    use_parallel_residual=True,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def build(out: str | Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from kotune.data.corpus import iter_documents
    from kotune.models.tiny import DEFAULT_CORPUS
    from kotune.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer(iter_documents(DEFAULT_CORPUS), vocab_size=POLYGLOT_KO_1_3B["vocab_size"],
                              style="gpt-neox")
    assert len(tok) <= POLYGLOT_KO_1_3B["vocab_size"], len(tok)
    config = GPTNeoXConfig(**POLYGLOT_KO_1_3B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).to(torch.float16)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def parameter_count(folder: str | Path) -> int:
    """Parameters in a folder's safetensors files, read from their headers (no weights loaded)."""
    import math

    from safetensors import safe_open

    total = 0
    for file in Path(folder).glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return total


if __name__ == "__main__":
    build(sys.argv[1])

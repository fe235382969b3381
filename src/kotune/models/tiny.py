"""Tiny models with a Korean byte-level BPE tokenizer, built locally: for tests and the quickstart.

No download: the tokenizer is trained on Korean text shipped with kotune (or any text given), and the model
is randomly initialised from a small config of the chosen architecture.
"""

from __future__ import annotations

from pathlib import Path

from kotune.data.loading import LoadResult, load_file
from kotune.data.schema import Conversation, PreferencePair

SAMPLES_DIR = Path(__file__).resolve().parents[3] / "data" / "samples"
DEFAULT_CORPUS = [
    SAMPLES_DIR / "koalpaca_v1.0.sample.json",
    SAMPLES_DIR / "kochatgpt_conversation.sample.txt",
    SAMPLES_DIR / "vaiv_preference.sample.json",
]

# GPT-NeoX (polyglot-ko) uses one text for bos/eos and, in polyglot, pad may equal eos: keep that here so tests
# prove masking never compares ids with pad/eos. LLaMA tokenizers prepend <s>.
SPECIAL_TOKENS = {
    "gpt-neox": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
}


def corpus_texts(paths: list[str | Path]) -> list[str]:
    """Every text in `paths`: plain lines of .txt files that are not conversation logs, and every message,
    input and reply of any data format kotune reads."""
    texts: list[str] = []
    for path in map(str, paths):
        if path.endswith(".txt") and "<<start conversation>>" not in Path(path).read_text(encoding="utf-8")[:4096]:
            texts.extend(line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())
            continue
        result = LoadResult()
        load_file(path, result)
        for ex in result.examples:
            if isinstance(ex, Conversation):
                texts.extend(m.content for m in ex.messages)
                texts.extend(m.input for m in ex.messages if m.input)
            elif isinstance(ex, PreferencePair):
                texts.extend([*(m.content for m in ex.prompt), ex.chosen, ex.rejected])
    return texts


def train_tokenizer(texts: list[str], *, arch: str = "gpt-neox", vocab_size: int = 4000):
    """A byte-level BPE tokenizer (HF `tokenizers`) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS[arch]
    special_list = list(dict.fromkeys(specials.values()))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_list,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if arch == "llama":
        bos = specials["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=2048, **specials)


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

    tokenizer = train_tokenizer(corpus_texts(corpus or DEFAULT_CORPUS), arch=arch, vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, hidden=hidden, layers=layers, heads=heads))
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out

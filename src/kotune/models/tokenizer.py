"""Byte-level BPE tokenizers for Korean (HF `tokenizers`), and how well a tokenizer fits Korean text.

Byte-level BPE never meets an unknown character: what its merges do not cover falls back to raw bytes, which
for Hangul (3 bytes a syllable in UTF-8) costs up to three tokens a character. `tokenizer_stats` measures
exactly that: Korean characters per token, and the share of tokens that are not whole characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# GPT-NeoX style (polyglot-ko): one text for bos/eos; polyglot's pad may equal eos. LLaMA style prepends <s>.
STYLES = {
    "gpt-neox": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    "llama": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
}
_HANGUL = re.compile("[\uac00-\ud7a3]")


def train_bpe_tokenizer(texts: Iterable[str], *, vocab_size: int, style: str = "gpt-neox",
                        extra_special_tokens: list[str] | None = None, model_max_length: int = 2048):
    """Train a byte-level BPE tokenizer on `texts` (streamed) and wrap it as a transformers fast tokenizer.

    Args:
        style: "gpt-neox" (no BOS added) or "llama" (prepends <s>), which also sets the special tokens.
        extra_special_tokens: more tokens that must never be split (e.g. chat role markers).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if style not in STYLES:
        raise ValueError(f"style: unknown {style!r}; choose one of {', '.join(STYLES)}")
    specials = STYLES[style]
    special_list = list(dict.fromkeys([*specials.values(), *(extra_special_tokens or [])]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_list, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    if style == "llama":
        bos = specials["bos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **specials)
    if extra_special_tokens:
        wrapped.add_special_tokens({"additional_special_tokens": extra_special_tokens})
    return wrapped


def tokenizer_stats(tokenizer, texts: list[str]) -> dict:
    """Korean characters per token and the byte-fallback rate (tokens that decode to an incomplete character,
    shown as U+FFFD) over `texts`; works for any tokenizer, byte-level BPE or SentencePiece."""
    tokens = fallback = 0
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        tokens += len(ids)
        fallback += sum("\ufffd" in piece for piece in tokenizer.batch_decode([[i] for i in ids]))
    hangul, chars = sum(len(_HANGUL.findall(text)) for text in texts), sum(map(len, texts))
    return {"documents": len(texts), "tokens": tokens, "characters": chars, "korean_characters": hangul,
            "korean_chars_per_token": hangul / max(tokens, 1), "chars_per_token": chars / max(tokens, 1),
            "byte_fallback_rate": fallback / max(tokens, 1), "vocab_size": len(tokenizer)}


def split_held_out(documents: Iterable[str], every: int, held_out: list[str], limit: int) -> Iterator[str]:
    """Yield the training documents, keeping every `every`-th one (up to `limit`) aside in `held_out`."""
    for i, doc in enumerate(documents):
        if i % every == every - 1 and len(held_out) < limit:
            held_out.append(doc)
        else:
            yield doc

"""`kotune pretrain`: causal-LM pre-training on raw text, from scratch or continued, with held-out perplexity."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from kotune.common.losses import causal_lm_loss_sum
from kotune.common.outputs import EVAL_JSON
from kotune.config import to_dict
from kotune.data.corpus import iter_documents
from kotune.data.token_blocks import TokenBlocks, vocab_fingerprint, write_token_files
from kotune.models.load import load_model
from kotune.pretrain.config import ModelInitConfig, PretrainConfig
from kotune.training.attention import check_trainable as check_attention
from kotune.training.attention import flex_trainable, packed_only_attention, use_attention
from kotune.training.loop import train_loop
from kotune.training.stage import finish_stage, start_stage
from kotune.training.tracking import PROJECT, flat_config


def build_config(init: ModelInitConfig, tokenizer):
    from transformers import GPTNeoXConfig, LlamaConfig

    common = dict(
        vocab_size=len(tokenizer), hidden_size=init.hidden_size, num_hidden_layers=init.num_hidden_layers,
        num_attention_heads=init.num_attention_heads, max_position_embeddings=init.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=init.tie_word_embeddings,
    )
    if init.arch == "llama":
        width = init.intermediate_size or 256 * math.ceil(init.hidden_size * 8 / 3 / 256)
        return LlamaConfig(intermediate_size=width, num_key_value_heads=init.num_key_value_heads or init.num_attention_heads, **common)
    return GPTNeoXConfig(intermediate_size=init.intermediate_size or 4 * init.hidden_size, **common)


def _corpus_key(cfg: PretrainConfig, tokenizer) -> str:
    """Identifies the token files: same corpus files (path, size, mtime), tokenizer and split -> reuse them."""
    files = [(f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in cfg.data.files]
    vocab = vocab_fingerprint(tokenizer)
    key = json.dumps([files, vocab, cfg.data.eval_fraction, cfg.data.text_field, cfg.data.unit])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def corpus_tokens(folder: Path, tokenizer) -> Path:
    """A token folder from `kotune corpus`, checked to be made with this tokenizer (the ids must mean the same)."""
    meta_path = folder / "tokens.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"data.tokens: {meta_path} not found; point it at the tokens/ folder `kotune corpus` "
                                "wrote (a recipe with `tokenizer` set)")
    made_with = json.loads(meta_path.read_text()).get("vocab")
    if made_with != vocab_fingerprint(tokenizer):
        raise ValueError(f"data.tokens: {folder} was tokenized with another vocabulary "
                         f"({json.loads(meta_path.read_text()).get('tokenizer')}) than this run's tokenizer; "
                         "set `tokenizer` to that one, or run `kotune corpus` with this tokenizer")
    return folder


def prepare_tokens(cfg: PretrainConfig, tokenizer, log=print) -> dict:
    """Tokenize the corpus into output_dir/tokens (once; reused while corpus and tokenizer are unchanged)."""
    folder = Path(cfg.output_dir) / "tokens"
    key = _corpus_key(cfg, tokenizer)
    meta_path = folder / "tokens.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        return json.loads(meta_path.read_text())
    log(f"tokenizing {len(cfg.data.files)} corpus file(s) into {folder}")
    docs = iter_documents(cfg.data.files, text_field=cfg.data.text_field, unit=cfg.data.unit)
    return write_token_files(docs, tokenizer, folder, eval_fraction=cfg.data.eval_fraction, meta={"key": key})


@torch.no_grad()
def perplexity(model, blocks: TokenBlocks, device, max_blocks: int, batch_size: int = 8) -> float:
    """exp(mean next-token loss) over the first `max_blocks` held-out blocks."""
    model.eval()
    total, count = 0.0, 0
    indices = list(range(min(len(blocks), max_blocks)))
    for start in range(0, len(indices), batch_size):
        batch = {k: v.to(device) for k, v in blocks.collate(indices[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        loss_sum, n = causal_lm_loss_sum(model(**batch, use_cache=False).logits, labels)
        total += loss_sum.item()
        count += n
    model.train()
    return math.exp(total / max(count, 1))


def run(cfg: PretrainConfig, log=print) -> Path:
    """Pre-train and save; returns the output folder.

    Outputs: model (safetensors) + tokenizer, config.yaml, tokens/ (token files), metrics.jsonl, loss.png,
    eval.json (held-out perplexity before and after training).
    """
    from transformers import AutoModelForCausalLM

    # tokens/ is a cache keyed by corpus and tokenizer: kept by --overwrite
    ctx = start_stage(cfg, "pretrain", log, accelerate=True, keep=("tokens",))
    out, accelerator, tokenizer, say = ctx.out, ctx.accelerator, ctx.tokenizer, ctx.log
    if cfg.data.tokens:  # tokenized by `kotune corpus`: read as is
        tokens = corpus_tokens(Path(cfg.data.tokens), tokenizer)
    else:
        tokens = out / "tokens"
        if ctx.is_main:
            prepare_tokens(cfg, tokenizer, say)
    accelerator.wait_for_everyone()
    accelerator.init_trackers(PROJECT, config=flat_config(cfg))  # train.report_to; the first process logs
    meta = json.loads((tokens / "tokens.json").read_text())
    say(f"corpus: {meta['train_documents']:,} documents / {meta['train_tokens']:,} tokens for training, "
        f"{meta['eval_documents']:,} / {meta['eval_tokens']:,} held out")
    if meta["train_tokens"] == 0 or meta["eval_tokens"] == 0:
        raise ValueError("data: the corpus is too small to hold out documents; add text or raise data.eval_fraction")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_blocks = TokenBlocks(tokens / "train.bin", cfg.data.block_size, tokenizer.eos_token_id, pad)
    eval_blocks = TokenBlocks(tokens / "eval.bin", cfg.data.block_size, tokenizer.eos_token_id, pad)

    # Blocks are always packed (position_ids restart after every EOS): the kernel that skips the blocks between
    # documents where the device has one (flash-attention, flex_attention on CUDA), else sdpa's dense packed mask.
    attention = cfg.train.attn_implementation
    check_attention(attention, accelerator.device.type)
    if cfg.model:
        model = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, attn_implementation=attention)
    else:
        model = AutoModelForCausalLM.from_config(build_config(cfg.init, tokenizer), attn_implementation=attention)
    use_attention(model, packed_only_attention(attention, accelerator.device.type, flex_ok=flex_trainable(model)))
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {'continued from ' + cfg.model if cfg.model else 'random init ' + cfg.init.arch}, {n_params / 1e6:,.1f}M parameters")

    initial: list[float] = []  # held-out perplexity of the starting weights (not measured on a resumed run)
    model = train_loop(accelerator, model, train_blocks, cfg.train, out, desc="pretrain", log=say, identity=ctx.identity,
                       before_training=lambda m: initial.append(perplexity(m, eval_blocks, accelerator.device,
                                                                           cfg.data.eval_max_blocks)))
    before = initial[0] if initial else None
    after = perplexity(model, eval_blocks, accelerator.device, cfg.data.eval_max_blocks)
    result = {"perplexity_before": before, "perplexity": after, "eval_blocks": min(len(eval_blocks), cfg.data.eval_max_blocks),
              "eval_tokens": meta["eval_tokens"], "parameters": n_params, "init": None if cfg.model else to_dict(cfg.init)}
    finish_stage(ctx, model, curves=["loss", "lr", "grad_norm"], title="pre-training", report=result, report_file=EVAL_JSON)
    say(f"held-out perplexity: {after:,.2f}" + (f" (before training: {before:,.2f})" if before else ""))
    say(f"saved to {out}")
    return out

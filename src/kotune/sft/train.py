"""`kotune sft`: supervised fine-tuning, full or LoRA, on CPU or GPUs (loop: kotune.training.loop)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kotune.common.outputs import DATA_REPORT_JSON
from kotune.data.collate import pack_batch, pad_batch
from kotune.data.loading import load_examples
from kotune.data.tokenize import TokenizedExample, check_trainable, token_stats, tokenize_conversations
from kotune.models.load import load_model
from kotune.models.lora import apply_lora
from kotune.sft.config import SFTConfig
from kotune.training.attention import check_trainable as check_attention
from kotune.training.attention import flex_trainable, plan_attention, use_attention
from kotune.training.config import frozen_dtype
from kotune.training.loop import train_loop
from kotune.training.stage import finish_stage, start_stage
from kotune.training.tracking import PROJECT, flat_config


LOSS_CURVES = ["loss", "lr", "grad_norm"]
SHOWN_PER_KIND = 10  # skipped records printed one per line; data_report.json lists every one


def _not_shown(count: int) -> str:
    return f" ({count - SHOWN_PER_KIND:,} more not shown; all in data_report.json)" if count > SHOWN_PER_KIND else ""


def prepare_examples(cfg: SFTConfig, tokenizer, log=print):
    """Load, convert, render and mask the training data; print and return what training will see."""
    loaded = load_examples(cfg.data.files, format=cfg.data.format, kind="sft", skip_invalid=cfg.data.skip_invalid)
    for problem in loaded.problems[:SHOWN_PER_KIND]:
        log(f"skipped {problem}")
    if loaded.problems:
        log(f"skipped {len(loaded.problems)} invalid record(s): " + ", ".join(f"{k} {v}" for k, v in loaded.problems_per_kind.items())
            + _not_shown(len(loaded.problems)))
    for line in loaded.ignored_lines():
        log(f"ignored field {line}")
    examples = tokenize_conversations(tokenizer, loaded.examples, cfg.data.max_length)
    stats = token_stats(examples, tokenizer.eos_token_id)
    log(stats.summary())
    check_trainable(stats, examples, tokenizer.eos_token_id)
    empty = [e for e in examples if e.num_trained == 0]
    for e in empty[:SHOWN_PER_KIND]:
        log(f"skipped {e.source}: no trained token left after truncation to max_length={cfg.data.max_length}")
    if empty:
        log(f"skipped {len(empty):,} example(s) whose reply starts beyond max_length={cfg.data.max_length}"
            + _not_shown(len(empty)))
    report = {
        "files": loaded.formats_per_file,
        "records_per_format": dict(loaded.records_per_format),
        "skipped_records": [str(p) for p in loaded.problems],
        "ignored_fields": {name: len(where) for name, where in loaded.ignored.items()},
        "skipped_without_trained_tokens": [str(e.source) for e in empty],
        "stats": {**stats.__dict__, "trained_fraction": stats.trained_fraction},
    }
    return [e for e in examples if e.num_trained > 0], report


@dataclass
class SupervisedData:
    """Tokenized conversations for the training loop; collation only pads or packs."""

    examples: list[TokenizedExample]
    pad_id: int
    packed: bool

    def __len__(self) -> int:
        return len(self.examples)

    def length(self, index: int) -> int:
        return len(self.examples[index].input_ids)

    def trained_tokens(self, index: int) -> int:
        return self.examples[index].num_trained

    def collate(self, indices: list[int]) -> dict:
        pairs = [(self.examples[i].input_ids, self.examples[i].labels) for i in indices]
        return pack_batch(pairs) if self.packed else pad_batch(pairs, self.pad_id)


def build_model(cfg: SFTConfig, precision: str, device=None):
    """The model to train. Full fine-tuning keeps fp32 weights (the optimizer's master copy; autocast computes in
    bf16 on GPUs). LoRA's frozen base is held in the compute precision instead (bf16 on GPUs: half of fp32's
    memory; PEFT keeps the adapters in fp32), QLoRA's in 4-bit NF4."""
    frozen = frozen_dtype(precision)
    common = {"trust_remote_code": cfg.trust_remote_code, "attn_implementation": cfg.train.attn_implementation}
    if cfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = load_model(cfg.model, load_in_4bit=True, device=device, dtype=frozen, **common)
        # PEFT's preparation of a quantized base: norms and head in fp32, input gradients on for checkpointing.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model = load_model(cfg.model, dtype="fp32" if cfg.method == "full" else frozen, **common)
        if cfg.train.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
    if cfg.method == "full":
        return model
    return apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules)


def run(cfg: SFTConfig, log=print) -> Path:
    """Train and save; returns the output folder.

    Outputs: model or LoRA adapter + tokenizer with the training chat_template (safetensors), config.yaml,
    data_report.json, metrics.jsonl, loss.png, and resumable checkpoints under checkpoints/.
    """
    ctx = start_stage(cfg, "sft", log, accelerate=True)
    examples, report = prepare_examples(cfg, ctx.tokenizer, ctx.log)
    device = ctx.device.type
    check_attention(cfg.train.attn_implementation, device)  # before loading: a kernel that cannot train here
    model = build_model(cfg, ctx.precision, ctx.device)
    # Padding-free batches want a kernel that skips the blocks between packed sequences (kotune.training.attention).
    batching, attention = plan_attention(cfg.train.batching, cfg.train.attn_implementation, device,
                                         flex_ok=flex_trainable(model))
    use_attention(model, attention)
    ctx.log(f"batching: {batching}, attention: {model.config._attn_implementation}")
    if ctx.is_main:
        report = {**report, "template": ctx.template, "batching": batching,
                  "attention": model.config._attn_implementation, "method": cfg.method}
        (ctx.out / DATA_REPORT_JSON).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    ctx.accelerator.init_trackers(PROJECT, config=flat_config(cfg))  # train.report_to; the first process logs
    data = SupervisedData(examples, ctx.tokenizer.pad_token_id, packed=batching == "padding_free")
    model = train_loop(ctx.accelerator, model, data, cfg.train, ctx.out, desc="sft", log=ctx.log, identity=ctx.identity)
    finish_stage(ctx, model, curves=LOSS_CURVES, title=f"SFT {cfg.model}", adapter=cfg.method != "full")
    ctx.log(f"saved to {ctx.out} ({'model' if cfg.method == 'full' else 'LoRA adapter'} + tokenizer with chat_template)")
    return ctx.out

"""`kotune sft`: supervised fine-tuning, full or LoRA, on CPU or GPUs (loop: kotune.training.loop)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kotune.common.outputs import DATA_REPORT_JSON
from kotune.data.collate import pack_batch, pad_batch
from kotune.data.loading import LoadResult, load_examples
from kotune.data.split import held_out_split
from kotune.data.tokenize import TokenizedExample, check_trainable, token_stats, tokenize_conversations
from kotune.models.load import load_model
from kotune.models.lora import apply_lora
from kotune.sft.config import SFTConfig
from kotune.training.attention import check_trainable as check_attention
from kotune.training.attention import flex_trainable, plan_attention, use_attention
from kotune.training.config import frozen_dtype
from kotune.training.held_out import HeldOutEvaluator, before_after, held_out_line
from kotune.training.loop import train_loop
from kotune.training.stage import finish_stage, start_stage
from kotune.training.tracking import PROJECT, flat_config


LOSS_CURVES = ["loss", "lr", "grad_norm"]  # held-out loss (eval_loss) is drawn in the loss panel
HELD_OUT_BEFORE = "held_out_before.jsonl"  # per-example held-out loss of the model SFT started from
SHOWN_PER_KIND = 10  # skipped records printed one per line; data_report.json lists every one


def _not_shown(count: int) -> str:
    return f" ({count - SHOWN_PER_KIND:,} more not shown; all in data_report.json)" if count > SHOWN_PER_KIND else ""


def _load(files: list[str], cfg: SFTConfig, log) -> LoadResult:
    loaded = load_examples(files, format=cfg.data.format, kind="sft", skip_invalid=cfg.data.skip_invalid)
    for problem in loaded.problems[:SHOWN_PER_KIND]:
        log(f"skipped {problem}")
    if loaded.problems:
        log(f"skipped {len(loaded.problems)} invalid record(s): " + ", ".join(f"{k} {v}" for k, v in loaded.problems_per_kind.items())
            + _not_shown(len(loaded.problems)))
    for line in loaded.ignored_lines():
        log(f"ignored field {line}")
    return loaded


def prompt_key(conversation) -> str:
    """What a held-out split keeps together: every message but the reply trained last. Replies to one prompt (and
    exact duplicates) land on the same side, so held-out loss is measured on prompts training never saw."""
    return json.dumps([m.as_dict() for m in conversation.messages[:-1]], ensure_ascii=False)


def split_held_out(cfg: SFTConfig, loaded: LoadResult, log):
    """The conversations to train on and those held out (`data.eval_files`, else a seeded share of the prompts),
    with what the data report says about them."""
    if cfg.data.eval_files:
        held_loaded = _load(cfg.data.eval_files, cfg, log)
        held, why_none = held_loaded.examples, None if held_loaded.examples else "data.eval_files hold no conversation"
        info = {"from": "eval_files", "files": held_loaded.formats_per_file,
                "skipped_records": [str(p) for p in held_loaded.problems]}
        return loaded.examples, held, why_none, info
    train, held, why_none = held_out_split(loaded.examples, prompt_key, cfg.data.eval_fraction, cfg.train.seed)
    return train, held, why_none, {"from": "eval_fraction", "eval_fraction": cfg.data.eval_fraction, "seed": cfg.train.seed}


def prepare_examples(cfg: SFTConfig, tokenizer, log=print):
    """Load, convert, split, render and mask the data; print and return what training will see.

    Returns:
        (train, held_out, report): tokenized examples with at least one trained token, and the data report.
    """
    loaded = _load(cfg.data.files, cfg, log)
    train_convs, held_convs, why_none, held_info = split_held_out(cfg, loaded, log)
    examples = tokenize_conversations(tokenizer, train_convs, cfg.data.max_length)
    stats = token_stats(examples, tokenizer.eos_token_id)
    log(stats.summary())
    check_trainable(stats, examples, tokenizer.eos_token_id)
    empty = [e for e in examples if e.num_trained == 0]
    for e in empty[:SHOWN_PER_KIND]:
        log(f"skipped {e.source}: no trained token left after truncation to max_length={cfg.data.max_length}")
    if empty:
        log(f"skipped {len(empty):,} example(s) whose reply starts beyond max_length={cfg.data.max_length}"
            + _not_shown(len(empty)))
    held = tokenize_conversations(tokenizer, held_convs, cfg.data.max_length)
    held_empty = [str(e.source) for e in held if e.num_trained == 0]
    held = [e for e in held if e.num_trained > 0]
    held_info = {"examples": len(held), "trained_tokens": sum(e.num_trained for e in held), **held_info,
                 "skipped_without_trained_tokens": held_empty}
    if held:
        log(f"held out: {len(held):,} example(s), {held_info['trained_tokens']:,} trained tokens ("
            + ("data.eval_files" if cfg.data.eval_files else
               f"eval_fraction {cfg.data.eval_fraction} of the prompts, seed {cfg.train.seed}")
            + (f"; {len(held_empty):,} without a trained token within max_length skipped" if held_empty else "") + ")")
    else:
        held_info["none"] = why_none or f"no held-out example has a trained token within max_length={cfg.data.max_length}"
        log(f"held out: none ({held_info['none']}); no held-out loss will be measured"
            + ("" if cfg.data.eval_fraction == 0 and not cfg.data.eval_files else "; give data.eval_files to measure one"))
    report = {
        "files": loaded.formats_per_file,
        "records_per_format": dict(loaded.records_per_format),
        "skipped_records": [str(p) for p in loaded.problems],
        "ignored_fields": {name: len(where) for name, where in loaded.ignored.items()},
        "skipped_without_trained_tokens": [str(e.source) for e in empty],
        "stats": {**stats.__dict__, "trained_fraction": stats.trained_fraction},
        "held_out": held_info,
    }
    return [e for e in examples if e.num_trained > 0], held, report


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
    data_report.json, metrics.jsonl, loss.png, sft_report.json (held-out loss before and after, with intervals),
    held_out_before.jsonl (per-example held-out loss of the starting model), and resumable checkpoints under
    checkpoints/.
    """
    ctx = start_stage(cfg, "sft", log, accelerate=True)
    examples, held, report = prepare_examples(cfg, ctx.tokenizer, ctx.log)
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
    # Held-out batches are always padded: one row per example gives each example its own summed loss.
    evaluator = HeldOutEvaluator(ctx.accelerator, SupervisedData(held, ctx.tokenizer.pad_token_id, packed=False),
                                 [str(e.source) for e in held], cfg.train.micro_batch_size, ctx.out / HELD_OUT_BEFORE,
                                 ctx.is_main) if held else None
    model = train_loop(ctx.accelerator, model, data, cfg.train, ctx.out, desc="sft", log=ctx.log, identity=ctx.identity,
                       evaluate=evaluator, eval_every=cfg.train.eval_every)
    held_out = report["held_out"]
    if evaluator is not None:
        held_out = {**held_out, **before_after(evaluator.before, evaluator.last, cfg.train.seed)}
        ctx.log(held_out_line(held_out))
    finish_stage(ctx, model, curves=LOSS_CURVES, title=f"SFT {cfg.model}", adapter=cfg.method != "full",
                 report={"held_out": held_out})
    ctx.log(f"saved to {ctx.out} ({'model' if cfg.method == 'full' else 'LoRA adapter'} + tokenizer with chat_template)")
    return ctx.out

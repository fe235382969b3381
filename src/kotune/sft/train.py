"""`kotune sft`: supervised fine-tuning, full or LoRA, on CPU or GPUs.

The loop is written here rather than taken from TRL's SFTTrainer: on a tiny model TRL's defaults ran ~2x
slower than a plain PyTorch loop (bf16 emulation and gradient checkpointing on CPU, and its loss code), and
we need the loss normalised by the trained tokens of the whole global batch, checkpoints a kill cannot
corrupt, and an exact resume. Devices, mixed precision and multi-process training come from `accelerate`
(DDP, FSDP, DeepSpeed), never from code of our own.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from kotune.common.checkpoint import begin_checkpoint, latest_checkpoint, publish_checkpoint
from kotune.common.losses import causal_lm_loss_sum
from kotune.common.metrics import MetricsLog, plot_curves
from kotune.config import save_config
from kotune.data.batching import BatchPlan, split_for_rank
from kotune.data.collate import pack_batch, pad_batch
from kotune.data.loading import load_examples
from kotune.data.templates import install_template
from kotune.data.tokenize import check_trainable, token_stats, tokenize_conversations
from kotune.models.load import load_model, load_tokenizer
from kotune.models.lora import apply_lora
from kotune.sft.config import SFTConfig


def prepare_examples(cfg: SFTConfig, tokenizer, log=print):
    """Load, convert, render and mask the training data; print and return what training will see."""
    loaded = load_examples(cfg.data.files, format=cfg.data.format, kind="sft", skip_invalid=cfg.data.skip_invalid)
    for problem in loaded.problems:
        log(f"skipped {problem}")
    if loaded.problems:
        log(f"skipped {len(loaded.problems)} invalid record(s): " + ", ".join(f"{k} {v}" for k, v in loaded.problems_per_kind.items()))
    examples = tokenize_conversations(tokenizer, loaded.examples, cfg.data.max_length)
    stats = token_stats(examples, tokenizer.eos_token_id)
    log(stats.summary())
    check_trainable(stats, examples, tokenizer.eos_token_id)
    empty = [e for e in examples if e.num_trained == 0]
    for e in empty:
        log(f"skipped {e.source}: no trained token left after truncation to max_length={cfg.data.max_length}")
    report = {
        "files": loaded.formats_per_file,
        "records_per_format": dict(loaded.records_per_format),
        "skipped_records": [str(p) for p in loaded.problems],
        "skipped_without_trained_tokens": [str(e.source) for e in empty],
        "stats": {**stats.__dict__, "trained_fraction": stats.trained_fraction},
    }
    return [e for e in examples if e.num_trained > 0], report


def _precision(cfg: SFTConfig) -> str:
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _batching(cfg: SFTConfig, model) -> str:
    if cfg.train.batching != "auto":
        return cfg.train.batching
    impl = getattr(model.config, "_attn_implementation", "") or ""
    return "padding_free" if impl.startswith("flash_attention") else "padded"


def build_model(cfg: SFTConfig):
    model = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.train.attn_implementation)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.method == "lora":
        model = apply_lora(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, target_modules=cfg.lora.target_modules)
    return model


def _scheduler(cfg: SFTConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.train.lr_scheduler, cfg.train.lr_scheduler)
    warmup = math.ceil(cfg.train.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def run(cfg: SFTConfig, log=print) -> Path:
    """Train and save; returns the output folder.

    Outputs: model or LoRA adapter + tokenizer with the training chat_template (safetensors), config.yaml,
    data_report.json, metrics.jsonl, loss.png, and resumable checkpoints under checkpoints/.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    precision = _precision(cfg)
    accelerator = Accelerator(mixed_precision={"fp32": "no"}.get(precision, precision), cpu=not torch.cuda.is_available())
    is_main = accelerator.is_main_process
    say = log if is_main else (lambda *_: None)
    out = Path(cfg.output_dir)
    set_seed(cfg.train.seed)

    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model, trust_remote_code=cfg.trust_remote_code)
    template = install_template(tokenizer, cfg.data.template)
    say(f"template: {template}")
    examples, report = prepare_examples(cfg, tokenizer, say)
    model = build_model(cfg)
    batching = _batching(cfg, model)
    lengths = [len(e.input_ids) for e in examples]

    world = accelerator.num_processes
    plan = BatchPlan(len(examples), cfg.train.global_batch_size, cfg.train.micro_batch_size, cfg.train.seed,
                     cfg.train.epochs, cfg.train.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    scheduler = _scheduler(cfg, optimizer, plan.total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    start_step = 0
    found = latest_checkpoint(out / "checkpoints") if cfg.train.resume else None
    if found:
        accelerator.load_state(str(found[0]))
        start_step = found[1]["step"]
        say(f"resumed from {found[0]} (step {start_step})")
    if is_main:
        save_config(cfg, out / "config.yaml")
        (out / "data_report.json").write_text(json.dumps({**report, "template": template, "batching": batching}, ensure_ascii=False, indent=1))
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=start_step if found else None) if is_main else None
    say(f"training: {plan.total_steps} steps, {len(examples):,} examples, global batch {cfg.train.global_batch_size}, "
        f"{world} process(es), {precision}, {batching}, method {cfg.method}")

    model.train()
    progress = tqdm(total=plan.total_steps, initial=start_step, disable=not is_main, desc="sft", unit="step")
    started = time.perf_counter()
    trained_seen = 0
    for step in range(start_step, plan.total_steps):
        indices = plan.step_examples(step)
        global_trained = sum(examples[i].num_trained for i in indices)
        micro_batches = split_for_rank(indices, lengths, accelerator.process_index, world, cfg.train.micro_batch_size)
        loss_total = torch.zeros((), device=accelerator.device)
        for k, micro in enumerate(micro_batches):
            weight = 1.0 if micro else 0.0  # placeholder micro-batch: runs, contributes nothing
            pairs = [(examples[i].input_ids, examples[i].labels) for i in (micro or indices[:1])]
            batch = pack_batch(pairs) if batching == "padding_free" else pad_batch(pairs, tokenizer.pad_token_id)
            labels = batch.pop("labels").to(accelerator.device)
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            sync = k == len(micro_batches) - 1
            with accelerator.no_sync(model) if not sync else nullcontext(), accelerator.autocast():
                logits = model(**batch, use_cache=False).logits
                loss_sum, _ = causal_lm_loss_sum(logits, labels)
                # DDP averages gradients over processes; scaling by world size makes the step's gradient the
                # mean over every trained token of the global batch.
                loss = loss_sum * weight * world / global_trained
                accelerator.backward(loss)
            loss_total += loss_sum.detach() * weight
        grad_norm = accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm) if cfg.train.max_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = accelerator.reduce(loss_total, reduction="sum").item() / global_trained
        trained_seen += global_trained
        elapsed = time.perf_counter() - started
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{trained_seen / elapsed:,.0f}")
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss became {loss_value} at step {step + 1}; lower train.learning_rate")
        if metrics and ((step + 1) % cfg.train.log_every == 0 or step + 1 == plan.total_steps):
            metrics.write({
                "step": step + 1, "epoch": round(plan.epoch_of(step + 1), 4), "loss": loss_value,
                "lr": scheduler.get_last_lr()[0], "grad_norm": None if grad_norm is None else float(grad_norm),
                "trained_tokens": global_trained, "trained_tokens_per_s": trained_seen / elapsed, "elapsed_s": elapsed,
            })
        if cfg.train.save_every and (step + 1) % cfg.train.save_every == 0 and step + 1 < plan.total_steps:
            _checkpoint(accelerator, out, step + 1, cfg.train.keep_checkpoints)
    progress.close()

    accelerator.wait_for_everyone()
    if is_main:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out, safe_serialization=True, state_dict=accelerator.get_state_dict(model))
        tokenizer.save_pretrained(out)
        plot_curves(out / "metrics.jsonl", out / "loss.png", ["loss", "lr", "grad_norm"], title=f"SFT {cfg.model}")
        say(f"saved to {out} ({'LoRA adapter' if cfg.method == 'lora' else 'model'} + tokenizer with chat_template)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def _checkpoint(accelerator, out: Path, step: int, keep: int) -> None:
    """Every process writes its part (accelerate: model, optimizer, scheduler, RNG); the main process then
    publishes the folder atomically."""
    root = out / "checkpoints"
    if accelerator.is_main_process:
        begin_checkpoint(root, step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(root / f"step-{step:07d}.tmp"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_checkpoint(root, step, {"step": step}, keep)
    accelerator.wait_for_everyone()

"""The optimisation loop for causal-LM stages (SFT, pre-training).

Written here rather than taken from TRL's SFTTrainer or transformers' Trainer: on a tiny model on CPU TRL's
defaults ran ~2.2x slower than a plain PyTorch loop, mostly in its chunked log-prob LM head (~56% of a step) and
gradient checkpointing (+21%); bf16 autocast was no cost on an AMX CPU (benchmarks/sft_throughput.py),
and we need the loss normalised by the trained tokens of the whole global batch, checkpoints a kill cannot
corrupt, and an exact resume. Devices, mixed precision and multi-process training (DDP, FSDP, DeepSpeed) come
from `accelerate`, never from code of our own.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from kotune.common.checkpoint import begin_checkpoint, latest_checkpoint, publish_checkpoint
from kotune.common.device import resolve_precision
from kotune.common.host_memory import peak_rss_bytes
from kotune.common.losses import IGNORE_INDEX, causal_lm_loss_sum, next_token_targets
from kotune.common.metrics import MetricsLog
from kotune.common.outputs import METRICS_JSONL
from kotune.common.run_folder import check_resume_step
from kotune.data.batching import BatchPlan, split_for_rank
from kotune.training import trainable_state
from kotune.training.config import TrainConfig
from kotune.training.distributed import configure_deepspeed
from kotune.training.tracking import numeric


class TokenData(Protocol):
    """What the loop trains on: indexable examples that collate into model inputs with `labels`."""

    def __len__(self) -> int: ...

    def length(self, index: int) -> int: ...

    def trained_tokens(self, index: int) -> int: ...

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]: ...


def _scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.lr_scheduler, cfg.lr_scheduler)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _checkpoint(accelerator, model, out: Path, step: int, keep: int, identity: dict | None) -> None:
    """Every process writes its part (accelerate: model, optimizer, scheduler, RNG; of a LoRA/QLoRA model only
    the trainable parameters, see training/trainable_state.py); the main process then publishes the folder
    atomically."""
    root = out / "checkpoints"
    if accelerator.is_main_process:
        begin_checkpoint(root, step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(root / f"step-{step:07d}.tmp"), **trainable_state.save_kwargs(accelerator, model))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_checkpoint(root, step, {"step": step, "run": identity}, keep)
    accelerator.wait_for_everyone()


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _trained_loss_sum(model, batch: dict, labels: torch.Tensor, select_logits: bool) -> torch.Tensor:
    """Summed cross-entropy over the trained tokens of a micro-batch.

    Where the model supports it, only the positions that predict a trained token go through the LM head
    (`logits_to_keep` with a boolean mask): with a large vocabulary and prompts masked out, that saves most of
    the head's compute and the largest activation of the step. `use_cache=False` also lets transformers build
    its packed-sequence mask from position_ids.
    """
    if not select_logits:
        return causal_lm_loss_sum(model(**batch, use_cache=False).logits, labels)[0]
    targets = next_token_targets(labels)
    keep = targets != IGNORE_INDEX
    logits = model(**batch, use_cache=False, logits_to_keep=keep).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets[keep], reduction="sum")


def train_loop(accelerator, model, data: TokenData, cfg: TrainConfig, out: Path, *, desc: str, log=print,
               before_training: Callable[[torch.nn.Module], None] | None = None, identity: dict | None = None,
               evaluate: Callable[[torch.nn.Module, int], dict] | None = None, eval_every: int = 0):
    """Train `model` on `data` for the steps `cfg` asks; returns the prepared (possibly wrapped) model.

    Writes metrics.jsonl into `out`, and resumable checkpoints under `out/checkpoints`.
    `before_training(prepared_model)` runs on every process before the first step of a fresh run: under FSDP or
    ZeRO-3 only the prepared model can run a forward pass (its parameters are sharded until then).
    `identity` (`kotune.common.run_folder.run_identity`) goes into every checkpoint, so a resume can tell whether
    a checkpoint is this run's; the stage checked it against the folder before calling this.
    `evaluate(prepared_model, step)` runs on every process before the first step of a fresh run (step 0), every
    `eval_every` steps (0: never in between) and after the last; the metrics it returns become a metrics.jsonl row.
    """
    from accelerate.utils import DistributedType
    from tqdm.auto import tqdm

    is_main = accelerator.is_main_process
    world = accelerator.num_processes
    lengths = [data.length(i) for i in range(len(data))]
    plan = BatchPlan(len(data), cfg.global_batch_size, cfg.micro_batch_size, cfg.seed, cfg.epochs, cfg.max_steps)
    # Fused AdamW on GPUs (one kernel for all parameters); elsewhere torch's default implementation.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay, fused=accelerator.device.type == "cuda" or None)
    scheduler = _scheduler(cfg, optimizer, plan.total_steps)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:
        configure_deepspeed(accelerator, cfg)
    # The scheduler is not prepared: accelerate would step it once per process, while our steps are already
    # global optimizer steps. It is registered so checkpoints still save and restore it.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    trainable_state.register(accelerator)
    # Collected after prepare: FSDP2 replaces parameters with sharded ones.
    params = [p for p in model.parameters() if p.requires_grad]
    if world > 1:  # every process says it is there (a launch that silently started one shows "1 process(es)" below)
        # With the peak host memory so far: loading and sharding are done, so it shows what each process held to
        # load the model (under FSDP2 / ZeRO-3 low-RAM loading only the first process holds the full weights).
        print(f"process {accelerator.process_index} of {world} ({accelerator.distributed_type.value}), "
              f"peak host RAM after loading {peak_rss_bytes() / 2**20:,.0f} MiB", flush=True)

    start_step = 0
    found = latest_checkpoint(out / "checkpoints") if cfg.resume else None
    if found:
        check_resume_step(found, plan.total_steps)
        accelerator.load_state(str(found[0]), **trainable_state.load_kwargs(accelerator, model))
        start_step = found[1]["step"]
        log(f"resumed from {found[0]} (step {start_step})")
    metrics = MetricsLog(out / METRICS_JSONL, resume_step=start_step if found else None) if is_main else None
    log(f"training: {plan.total_steps} steps, {len(data):,} examples, global batch {cfg.global_batch_size}, "
        f"{world} process(es), {resolve_precision(cfg.precision)}")

    if before_training is not None and not found:
        before_training(model)

    def held_out_row(step: int) -> None:
        row = evaluate(model, step)
        if metrics:
            metrics.write({"step": step, "epoch": round(plan.epoch_of(step), 4), **row})
            accelerator.log(numeric(row), step=step)

    if evaluate is not None and not found:
        held_out_row(0)
    select_logits = _accepts_logits_to_keep(accelerator.unwrap_model(model))
    model.train()
    progress = tqdm(total=plan.total_steps, initial=start_step, disable=not is_main, desc=desc, unit="step")
    started = time.perf_counter()
    trained_seen = 0
    for step in range(start_step, plan.total_steps):
        indices = plan.step_examples(step)
        global_trained = sum(data.trained_tokens(i) for i in indices)
        micro_batches = split_for_rank(indices, lengths, accelerator.process_index, world, cfg.micro_batch_size)
        loss_total = torch.zeros((), device=accelerator.device)
        # One autocast for the whole step: autocast keeps its bf16 copies of the weights until it exits, so they are
        # cast once per optimizer step rather than once per micro-batch (the weights change only at the step).
        with accelerator.autocast():
            for k, micro in enumerate(micro_batches):
                weight = 1.0 if micro else 0.0  # placeholder micro-batch: runs, contributes nothing
                batch = {key: value.to(accelerator.device) for key, value in data.collate(micro or indices[:1]).items()}
                labels = batch.pop("labels")
                sync = k == len(micro_batches) - 1
                accelerator.sync_gradients = sync  # DeepSpeed steps its engine inside backward() when this is set
                with accelerator.no_sync(model) if not sync else nullcontext():
                    loss_sum = _trained_loss_sum(model, batch, labels, select_logits)
                    # DDP, FSDP and ZeRO average gradients over processes; scaling by world size makes the step's
                    # gradient the mean over every trained token of the global batch. The loss is already normalised
                    # over the whole step, so DeepSpeed must not divide it again by its accumulation steps.
                    loss = loss_sum * weight * world / global_trained
                    accelerator.backward(loss, **({"scale_wrt_gas": False} if deepspeed else {}))
                loss_total += loss_sum.detach() * weight
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
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
        if metrics and ((step + 1) % cfg.log_every == 0 or step + 1 == plan.total_steps):
            row = {
                "step": step + 1, "epoch": round(plan.epoch_of(step + 1), 4), "loss": loss_value,
                "lr": scheduler.get_last_lr()[0], "grad_norm": None if grad_norm is None else float(grad_norm),
                "trained_tokens": global_trained, "trained_tokens_per_s": trained_seen / elapsed, "elapsed_s": elapsed,
            }
            metrics.write(row)
            accelerator.log(numeric(row), step=step + 1)  # the trackers of train.report_to (none: nothing)
        if evaluate is not None and ((eval_every and (step + 1) % eval_every == 0) or step + 1 == plan.total_steps):
            held_out_row(step + 1)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < plan.total_steps:
            _checkpoint(accelerator, model, out, step + 1, cfg.keep_checkpoints, identity)
    progress.close()
    accelerator.wait_for_everyone()
    return model

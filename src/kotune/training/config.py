"""Settings shared by the training stages (SFT, pre-training, reward, DPO, PPO): LoRA and optimisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.config import opt
from kotune.training.tracking import check_report_to, report_to_option


def resolve_precision(precision: str) -> str:
    """`auto`: bf16 on a GPU that supports it, else fp32 (CPUs are slow and inexact in half precision)."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def frozen_dtype(precision: str) -> str:
    """The dtype of weights that are never trained (LoRA's base, reference and reward models) for a resolved
    `precision`: bf16 under bf16 (half of fp32's memory, and what autocast computes in anyway); fp32 otherwise, as
    fp16 weights overflow where bf16 ones do not."""
    return "bf16" if precision == "bf16" else "fp32"


def check_optimisation(cfg) -> None:
    """The checks every stage's optimisation section needs (SFT and pre-training here, reward and DPO beside)."""
    if cfg.global_batch_size % cfg.micro_batch_size:
        raise ValueError(
            f"global_batch_size ({cfg.global_batch_size}) must be a multiple of micro_batch_size ({cfg.micro_batch_size})"
        )
    if cfg.learning_rate <= 0:
        raise ValueError("learning_rate: must be positive")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ValueError("warmup_ratio: must be in [0, 1)")


@dataclass
class LoraConfig:
    r: int = opt(8, "LoRA rank")
    alpha: int = opt(16, "LoRA alpha (scale = alpha / r)")
    dropout: float = opt(0.05, "dropout on the LoRA input")
    target_modules: list[str] | None = opt(None, "modules to adapt; unset: query_key_value (GPT-NeoX), q/k/v/o_proj (LLaMA)")


@dataclass
class TrainConfig:
    epochs: float = opt(3.0, "passes over the data (Alpaca: 3)")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = opt(2e-5, "peak learning rate (Alpaca, ChatBaker: 2e-5)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate schedule after warm-up")
    warmup_ratio: float = opt(0.03, "fraction of steps spent warming up (Alpaca: 0.03)")
    weight_decay: float = opt(0.0, "AdamW weight decay (Alpaca: 0)")
    global_batch_size: int = opt(16, "examples per optimizer step over all processes (ChatBaker: 16)")
    micro_batch_size: int = opt(4, "examples per forward pass per process; gradient accumulation makes up the rest")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)")
    seed: int = opt(42, "seed for initialisation, data order and dropout")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "auto: bf16 on a GPU that has it, else fp32 (CPU)")
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory (slower; for big models on GPU)")
    batching: Literal["auto", "padded", "padding_free"] = opt(
        "auto", "padded: length-sorted padded micro-batches; padding_free: one packed row per micro-batch, kept apart by "
        "position_ids (exact with every kernel; unset attention then picks flash_attention_2 if installed, else "
        "flex_attention on CUDA, else sdpa); auto: padding_free where the kernel skips the blocks between sequences "
        "(flash-attention, flex_attention on CUDA), else padded (on CPU sdpa's dense packed mask is slower)"
    )
    attn_implementation: str | None = opt(
        None, "sdpa | eager | flex_attention | flash_attention_2; unset: chosen with `batching` (see there)"
    )
    compile: bool = opt(False, "torch.compile the model (inductor, dynamic shapes; for GPUs: the first steps compile)")
    log_every: int = opt(1, "write metrics every N optimizer steps")
    save_every: int = opt(0, "save a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = opt(2, "how many step checkpoints to keep")
    resume: bool = opt(False, "continue from the newest complete checkpoint in output_dir")
    report_to: list[str] = report_to_option()

    def __post_init__(self) -> None:
        check_optimisation(self)
        check_report_to(self.report_to)

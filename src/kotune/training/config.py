"""Sections every training stage's recipe shares (SFT, pre-training, reward, DPO, PPO): the model section, LoRA,
optimisation, and the one rule their data sections are checked by.

A shared section is a base dataclass, so its keys stay at the top level of a recipe (`model:`, `output_dir:`,
`method:`, `lora:`) exactly where users write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt
from kotune.data.formats import FORMATS
from kotune.data.templates import TEMPLATE_NAMES
from kotune.training.tracking import check_report_to, report_to_option


def frozen_dtype(precision: str) -> str:
    """The dtype of weights that are never trained (LoRA's base, reference and reward models) for a resolved
    `precision`: bf16 under bf16 (half of fp32's memory, and what autocast computes in anyway); fp32 otherwise, as
    fp16 weights overflow where bf16 ones do not."""
    return "bf16" if precision == "bf16" else "fp32"


def check_data_section(data) -> None:
    """The checks of every stage's data section: a known input format and chat template, and a length limit
    (`max_length`, or `max_prompt_length` for prompts) that leaves room for a reply."""
    if data.format is not None and data.format not in FORMATS:
        raise ValueError(f"format: unknown {data.format!r}; known: {', '.join(FORMATS)}")
    if getattr(data, "template", "auto") not in TEMPLATE_NAMES:
        raise ValueError(f"template: unknown {data.template!r}; known: {', '.join(TEMPLATE_NAMES)}")
    for name in ("max_length", "max_prompt_length"):
        if getattr(data, name, 8) < 8:
            raise ValueError(f"{name}: must be at least 8")


@dataclass
class LoraConfig:
    r: int = opt(8, "LoRA rank")
    alpha: int = opt(16, "LoRA alpha (scale = alpha / r)")
    dropout: float = opt(0.05, "dropout on the LoRA input")
    target_modules: list[str] | None = opt(None, "modules to adapt; unset: query_key_value (GPT-NeoX), q/k/v/o_proj (LLaMA)")


@dataclass(kw_only=True)
class StageConfig:
    """The model section of every training stage: what it starts from, where it writes, how to load."""

    model: str = opt(help="the model the stage starts from: hub id or local folder (an SFT LoRA adapter folder works)")
    output_dir: str = opt(help="the run folder: model (or LoRA adapter) with its tokenizer, config.yaml, run.json, "
                               "metrics.jsonl, curves and the stage's report")
    overwrite: bool = opt(False, "clear what an earlier run left in output_dir (outputs, checkpoints) first; without "
                                 "it a used output_dir is refused (CLI: --overwrite)")
    tokenizer: str | None = opt(None, "tokenizer hub id or folder; unset: the model's")
    trust_remote_code: bool = opt(False, "run code shipped with the model (only for models you trust)")


@dataclass(kw_only=True)
class TunedStageConfig(StageConfig):
    """A stage that fine-tunes its model in full or with LoRA adapters."""

    method: Literal["full", "lora"] = opt("full", "full fine-tuning, or LoRA adapters (PEFT; the reference of DPO and "
                                                  "PPO is then the model with its adapter disabled)")
    lora: LoraConfig = opt(LoraConfig(), "LoRA settings (method: lora)")


def check_optimisation(cfg) -> None:
    if cfg.global_batch_size % cfg.micro_batch_size:
        raise ValueError(
            f"global_batch_size ({cfg.global_batch_size}) must be a multiple of micro_batch_size ({cfg.micro_batch_size})"
        )
    if cfg.learning_rate <= 0:
        raise ValueError("learning_rate: must be positive")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ValueError("warmup_ratio: must be in [0, 1)")


@dataclass
class OptimConfig:
    """The optimisation section of every training stage (SFT, pre-training, reward, DPO; PPO/RLOO/GRPO extend it)."""

    epochs: float = opt(3.0, "passes over the data (Alpaca: 3)")
    max_steps: int | None = opt(None, "stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = opt(2e-5, "peak learning rate (Alpaca, ChatBaker: 2e-5)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate schedule after warm-up")
    warmup_ratio: float = opt(0.03, "fraction of steps spent warming up (Alpaca: 0.03)")
    weight_decay: float = opt(0.0, "AdamW weight decay (Alpaca: 0)")
    global_batch_size: int = opt(16, "examples (pairs) per optimizer step over all processes (ChatBaker: 16)")
    micro_batch_size: int = opt(4, "examples per forward pass per process; gradient accumulation makes up the rest")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)")
    seed: int = opt(42, "seed for initialisation (a new head), data order and dropout")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "auto: bf16 on a GPU that has it, else fp32 (CPU)")
    gradient_checkpointing: bool = opt(False, "recompute activations to save memory (slower; for big models on GPU)")
    log_every: int = opt(1, "write metrics every N optimizer steps")
    report_to: list[str] = report_to_option()

    def __post_init__(self) -> None:
        check_optimisation(self)
        check_report_to(self.report_to)


@dataclass
class TrainConfig(OptimConfig):
    """Optimisation of kotune's own loop (SFT, pre-training): the shared section plus batching, compilation and
    resumable checkpoints."""

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
    save_every: int = opt(0, "save a resumable checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = opt(2, "how many step checkpoints to keep")
    resume: bool = opt(False, "continue from the newest complete checkpoint in output_dir")

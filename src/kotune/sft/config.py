"""The SFT recipe: one dataclass per section, each field documented and checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.config import opt
from kotune.data.formats import FORMATS
from kotune.data.templates import TEMPLATE_NAMES
from kotune.training.config import LoraConfig, TrainConfig


@dataclass
class DataConfig:
    files: list[str] = opt([], "data files (JSON, JSONL or KoChatGPT text); paths are relative to the working directory")
    format: str | None = opt(None, f"input format, detected when unset: {', '.join(FORMATS)}")
    template: str = opt("auto", f"prompt template: {', '.join(TEMPLATE_NAMES)}")
    max_length: int = opt(2048, "examples longer than this many tokens are cut at the end (ChatBaker: 2048)")
    skip_invalid: bool = opt(False, "train without invalid records (each is listed) instead of stopping")

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"format: unknown {self.format!r}; known: {', '.join(FORMATS)}")
        if self.template not in TEMPLATE_NAMES:
            raise ValueError(f"template: unknown {self.template!r}; known: {', '.join(TEMPLATE_NAMES)}")
        if self.max_length < 8:
            raise ValueError("max_length: must be at least 8")


@dataclass
class SFTConfig:
    """Supervised fine-tuning: full or LoRA, with prompt tokens masked out of the loss."""

    model: str = opt(help="base model: hub id (EleutherAI/polyglot-ko-1.3b) or local folder")
    output_dir: str = opt(help="where the model, tokenizer, config.yaml, metrics.jsonl and loss.png are written")
    overwrite: bool = opt(False, "clear what an earlier run left in output_dir (outputs, checkpoints) first; without "
                                 "it a used output_dir is refused (CLI: --overwrite)")
    data: DataConfig = opt(DataConfig(), "training data")
    tokenizer: str | None = opt(None, "tokenizer hub id or folder; unset: the model's")
    trust_remote_code: bool = opt(False, "run code shipped with the model (only for models you trust)")
    method: Literal["full", "lora", "qlora"] = opt(
        "full", "full fine-tuning; LoRA adapters (PEFT); or QLoRA: LoRA on the base loaded in 4-bit NF4 (bitsandbytes)")
    lora: LoraConfig = opt(LoraConfig(), "LoRA settings (method: lora | qlora)")
    train: TrainConfig = opt(TrainConfig(), "optimisation")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one data file is needed")

"""The SFT recipe: one dataclass per section, each field documented and checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kotune.common.options import opt
from kotune.data.formats import FORMATS
from kotune.data.templates import TEMPLATE_NAMES
from kotune.training.config import TrainConfig, TunedStageConfig, check_data_section


@dataclass
class DataConfig:
    files: list[str] = opt([], "data files (JSON, JSONL or KoChatGPT text); paths are relative to the working directory")
    format: str | None = opt(None, f"input format, detected when unset: {', '.join(FORMATS)}")
    template: str = opt("auto", f"prompt template: {', '.join(TEMPLATE_NAMES)}")
    max_length: int = opt(2048, "examples longer than this many tokens are cut at the end (ChatBaker: 2048)")
    skip_invalid: bool = opt(False, "train without invalid records (each is listed) instead of stopping")

    def __post_init__(self) -> None:
        check_data_section(self)


@dataclass(kw_only=True)
class SFTConfig(TunedStageConfig):
    """Supervised fine-tuning: full or LoRA, with prompt tokens masked out of the loss."""

    method: Literal["full", "lora", "qlora"] = opt(
        "full", "full fine-tuning; LoRA adapters (PEFT); or QLoRA: LoRA on the base loaded in 4-bit NF4 (bitsandbytes)")
    data: DataConfig = opt(DataConfig(), "training data")
    train: TrainConfig = opt(TrainConfig(), "optimisation")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one data file is needed")

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
    eval_files: list[str] = opt([], "held-out conversations for held-out loss; unset: eval_fraction of the prompts of files")
    eval_fraction: float = opt(0.1, "fraction of distinct prompts held out when eval_files is unset (a fixed, seeded "
                                    "choice by content, the same on rerun and on any number of processes; 0: none)")

    def __post_init__(self) -> None:
        check_data_section(self)
        if not 0 <= self.eval_fraction < 1:
            raise ValueError("eval_fraction: must be in [0, 1)")


@dataclass
class SFTTrainConfig(TrainConfig):
    """Optimisation of kotune's loop, plus how often SFT scores its held-out conversations."""

    eval_every: int = opt(100, "held-out loss every N optimizer steps (also before the first step and after the "
                               "last; 0: only those two)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_every < 0:
            raise ValueError("eval_every: must be 0 or more")


@dataclass(kw_only=True)
class SFTConfig(TunedStageConfig):
    """Supervised fine-tuning: full or LoRA, with prompt tokens masked out of the loss."""

    method: Literal["full", "lora", "qlora"] = opt(
        "full", "full fine-tuning; LoRA adapters (PEFT); or QLoRA: LoRA on the base loaded in 4-bit NF4 (bitsandbytes)")
    data: DataConfig = opt(DataConfig(), "training data")
    train: SFTTrainConfig = opt(SFTTrainConfig(), "optimisation and held-out evaluation")

    def __post_init__(self) -> None:
        if not self.data.files:
            raise ValueError("data.files: at least one data file is needed")


@dataclass
class PreviewConfig:
    """`kotune data preview`: an SFT recipe's training text, as the trainer sees it."""

    recipe: str = opt(help="an SFT recipe (see recipes/sft/)")
    overrides: list[str] = opt([], "key=value overrides of the recipe", cli="rest")
    limit: int = opt(3, "how many examples")
    as_json: bool = opt(False, 'one JSON object per example: {"text", "input_ids", "labels"}', flag="--json")

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit: must be >= 0, got {self.limit}")
